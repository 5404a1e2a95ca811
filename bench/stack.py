"""A local registry and a private containerd for the containerd benchmarks (cold start, throughput,
start -> entry, density), with the images they run pushed and pulled the way users do it.

containerd runs as the test fixtures run it (tests/services/containerd.py: own mount namespace,
state in a temp dir). runc and containerd-shim-runc-v2 come from the tools bin dir, which is on
containerd's PATH. The wasm-oci shim (`containerd-shim-wasm-oci-v1`, runtime
`io.containerd.wasm-oci.v1`) is installed the way docs/shim.md "Install" tells operators to: the
fast launcher written by `python -m wasm_oci.shim.launcher DIR` of the documented install
(bench/product.py: a fresh venv, `pip install REPO`) into a private dir put first on containerd's
PATH, as tests/services/shim.py does. pip's console script would be found otherwise, and it costs
~15 ms of `site` start-up per `start`/`delete`: the published figures would not be what an
operator gets. If the launcher cannot be written (wasm_oci.shim not importable), the Wasm side
of each benchmark reports `(shim not installed)`.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import product
from images import push_busybox, push_component

from services.containerd import ContainerdServer
from services.registry import RegistryServer, plain_registry

SHIM_BINARY = "containerd-shim-wasm-oci-v1"
WASM_RUNTIME = "io.containerd.wasm-oci.v1"
RUNC_RUNTIME = "io.containerd.runc.v2"


SHIM_INSTALL = "fast launcher (`python -m wasm_oci.shim.launcher DIR`, docs/shim.md Install)"
"""How the stacks install the shim, for the report's Machine section."""


def install_shim(directory: Path) -> Path | None:
    """The documented install: the launcher written into `directory` by a separate
    `python -m wasm_oci.shim.launcher`, exactly as an operator runs it; None if that fails."""
    done = subprocess.run([product.python(), "-m", "wasm_oci.shim.launcher", str(directory)], capture_output=True, text=True, timeout=60)
    path = directory / SHIM_BINARY
    return path if done.returncode == 0 and path.is_file() else None


@dataclass(frozen=True)
class Workload:
    """An image pulled into containerd and the runtime that runs it."""

    label: str
    runtime: str
    image: str


@dataclass
class Stack:
    registry: RegistryServer
    containerd: ContainerdServer
    shim: Path | None
    """The launcher containerd finds first on its PATH; None: it could not be written."""
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def _pull(self, reference: str) -> str:
        self.containerd.ctr("images", "pull", "--plain-http", reference, timeout=120)
        return reference

    def busybox(self, name: str, cmd: list[str]) -> Workload:
        """The runc baseline: the static busybox image running `cmd`."""
        return Workload("runc", RUNC_RUNTIME, self._pull(push_busybox(self.registry.host, f"bench/{name}", cmd)))

    def component(self, name: str, wasm: Path) -> Workload:
        """The Wasm side: `wasm` pushed in the image format, for the wasm-oci shim."""
        return Workload("wasm-oci", WASM_RUNTIME, self._pull(push_component(wasm, self.registry.host, f"bench/{name}")))

    def run(self, workload: Workload, task_id: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`ctr run --rm --runtime RUNTIME IMAGE ID`, the whole command; it must succeed."""
        return self.containerd.ctr("run", "--rm", "--runtime", workload.runtime, workload.image, task_id, timeout=timeout)

    def start_detached(self, workload: Workload, task_id: str) -> None:
        """`ctr run -d --null-io`: returns once the task runs."""
        self.containerd.ctr("run", "-d", "--null-io", "--runtime", workload.runtime, workload.image, task_id, timeout=120)


@dataclass
class Outputs:
    """Checks that short tasks printed `expected`, tallying the runs whose output never arrived.

    `ctr run` now and then returns exit status 0 with none of a fast task's output (seen with
    runc under load): such a run still counts, and the section says how many there were; a
    workload that never prints is an error. Threads may share one.
    """

    expected: str
    runs: Counter[str] = field(default_factory=Counter)
    lost: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, workload: Workload, stdout: str) -> None:
        with self._lock:
            self.runs[workload.label] += 1
            self.lost[workload.label] += self.expected not in stdout

    def note(self) -> str:
        for label, lost in self.lost.items():
            if lost == self.runs[label]:
                raise SystemExit(f"{label}: no run printed {self.expected!r}")
        return "\n".join(
            f"- {lost} of {self.runs[label]} {label} runs exited 0 but their output never reached `ctr`; they count as runs."
            for label, lost in self.lost.items()
            if lost
        )


@contextmanager
def stack() -> Iterator[Stack]:
    """A registry and a containerd in a short temp dir (unix socket paths must fit in 108 bytes)."""
    work = Path(tempfile.mkdtemp(prefix="wob-"))
    shim = install_shim(work / "shim-bin")
    containerd = ContainerdServer(workdir=work / "c", namespace="bench", extra_path=[shim.parent] if shim else [])
    try:
        with plain_registry(work / "registry") as registry, containerd:
            yield Stack(registry, containerd, shim)
    finally:
        shutil.rmtree(work, ignore_errors=True)
