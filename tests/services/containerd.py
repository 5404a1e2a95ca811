"""A private containerd (2.1, or 1.7 with `release="1.7"`) for tests, kept off the host's paths.

containerd runs from a config whose root/state/temp/sockets live in a temp dir, inside a
private mount namespace (`unshare -m --propagation private`) where a temp dir is bind-mounted
over `/run/containerd` (shim sockets, runc state and ctr FIFOs have fixed paths there). The
CRI and NRI plugins are off (tests drive it with `ctr`) unless `cri_config` is given
(tests/services/cri.py): then CRI runs, and /run/netns and /var/lib/cni are private too. Shims are found on containerd's PATH,
whose first entry is `shim_bin_dir` (put a `containerd-shim-*-v1` there, even after start).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .process import spawn, stop_process, wait_until
from .tools import find_tool, run_tool, tools_bin_dir

HOST_RUN_DIR = Path("/run/containerd")
# Plugin ids that tests never need and that would touch host paths or need Kubernetes bits:
# CRI (split into images/runtime/grpc in 2.x), NRI. containerd 2.1 reads config version 3.
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.images",
    "io.containerd.cri.v1.runtime",
    "io.containerd.podsandbox.controller.v1.podsandbox",
    "io.containerd.grpc.v1.sandbox-controllers",  # only fails to load without podsandbox
    "io.containerd.nri.v1.nri",
)
# containerd 1.7 (trixie's, task API v2 over ttrpc only) reads config version 2.
DISABLED_PLUGINS_1_7 = ("io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri")
# ctr subcommands that create FIFOs (default under /run/containerd/fifo) and take --fifo-dir.
_FIFO_COMMANDS = {("run",), ("tasks", "start"), ("tasks", "exec"), ("task", "start"), ("task", "exec"), ("t", "start"), ("t", "exec")}


def _toml(value: str) -> str:
    return json.dumps(value)  # a TOML basic string for plain paths


@dataclass
class ContainerdServer:
    """One containerd in its own mount namespace; `ctr()` talks to it."""

    workdir: Path
    namespace: str = "wasm-oci-test"
    release: str = "2.1"
    """"2.1" runs `containerd`/`ctr`, "1.7" runs `containerd-1.7`/`ctr-1.7` (see install-system-deps.sh)."""
    extra_path: Sequence[Path] = ()
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """Added to containerd's environment, which its shims inherit."""
    log_level: str = "info"
    cri_config: str = ""
    """TOML for the CRI plugins (config version 3); when set, CRI runs (NRI stays off) and the
    host paths CRI and CNI write to (/run/netns, /var/lib/cni) are private dirs too."""
    startup_seconds: float = 0.0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    mount_ns: str | None = None
    old_mount_ns: list[str] = field(default_factory=list)
    """Mount namespaces of earlier runs (`restart`): shims started there may still live."""

    @property
    def suffix(self) -> str:
        return "" if self.release == "2.1" else f"-{self.release}"

    @property
    def address(self) -> Path:
        """Absolute gRPC socket path (ctr -a needs an absolute path)."""
        return self.workdir / "containerd.sock"

    @property
    def ttrpc_address(self) -> Path:
        return self.workdir / "containerd.sock.ttrpc"

    @property
    def root(self) -> Path:
        return self.workdir / "root"

    @property
    def state(self) -> Path:
        return self.workdir / "state"

    @property
    def run_dir(self) -> Path:
        """What containerd and its shims see as /run/containerd."""
        return self.workdir / "run"

    @property
    def fifo_dir(self) -> Path:
        return self.workdir / "fifo"

    @property
    def shim_bin_dir(self) -> Path:
        return self.workdir / "bin"

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.toml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "containerd.log"

    def private_dirs(self) -> dict[Path, Path]:
        """Host path -> the dir bound over it in containerd's mount namespace."""
        dirs = {HOST_RUN_DIR: self.run_dir}
        if self.cri_config:
            dirs |= {Path("/run/netns"): self.workdir / "netns", Path("/var/lib/cni"): self.workdir / "cni-state"}
        return dirs

    def config(self) -> str:
        """containerd 2.1 reads config version 3, 1.7 version 2; the keys used here are alike."""
        legacy = self.release == "1.7"
        disabled_plugins = DISABLED_PLUGINS_1_7 if legacy else DISABLED_PLUGINS
        if self.cri_config:
            assert not legacy, "the CRI tests run containerd 2.1"
            disabled_plugins = ("io.containerd.nri.v1.nri",)
        disabled = ", ".join(_toml(p) for p in disabled_plugins)
        lines = [
            f"version = {2 if legacy else 3}",
            f"root = {_toml(str(self.root))}",
            f"state = {_toml(str(self.state))}",
            f"temp = {_toml(str(self.workdir / 'tmp'))}",
            f"disabled_plugins = [{disabled}]",
            "[grpc]",
            f"address = {_toml(str(self.address))}",
            "[ttrpc]",
            f"address = {_toml(str(self.ttrpc_address))}",
            "[debug]",
            f"level = {_toml(self.log_level)}",
            # The opt plugin would create /opt/containerd on the host.
            '[plugins."io.containerd.internal.v1.opt"]',
            f"path = {_toml(str(self.workdir / 'opt'))}",
        ]
        if not legacy:
            lines += ['[plugins."io.containerd.image-verifier.v1.bindir"]', f"bin_dir = {_toml(str(self.workdir / 'image-verifier'))}"]
        return "\n".join([*lines, self.cri_config, ""])

    def env(self) -> dict[str, str]:
        """containerd's environment: PATH = shim_bin_dir, extra_path, tools bin dir, PATH."""
        dirs = [
            str(self.shim_bin_dir),
            *map(str, self.extra_path),
            str(tools_bin_dir()),
            os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}
        return {**env, **self.extra_env, "PATH": os.pathsep.join(dirs)}

    def _socket_ready(self) -> bool | None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(self.address))
            except OSError:
                return None
        return True

    def start(self, timeout: float = 30.0) -> ContainerdServer:
        exe = find_tool(f"containerd{self.suffix}")
        binds = self.private_dirs()
        for d in (self.root, self.state, self.fifo_dir, self.shim_bin_dir, self.workdir / "tmp", *binds.values()):
            d.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config())
        # The bind targets must exist; empty dirs on the host are all this leaves behind.
        mounts = []
        for host, private in binds.items():
            host.mkdir(parents=True, exist_ok=True)
            mounts.append(f"mount --bind {shlex.quote(str(private))} {shlex.quote(str(host))}")
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            " && ".join([*mounts, 'exec "$@"']),
            "containerd",
            exe,
            "--config",
            str(self.config_path),
        ]
        began = time.monotonic()
        self.proc = spawn(argv, self.log_path, env=self.env(), cwd=self.workdir)
        try:
            wait_until(self._socket_ready, timeout=timeout, what=f"containerd at {self.address}", proc=self.proc, log_path=self.log_path)
            self.mount_ns = os.readlink(f"/proc/{self.proc.pid}/ns/mnt")
            if self.mount_ns == os.readlink("/proc/self/ns/mnt"):
                raise RuntimeError("containerd is not in a private mount namespace")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def ctr(
        self,
        *args: str | os.PathLike[str],
        namespace: str | None = None,
        timeout: float = 60.0,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `ctr -a <socket> -n <namespace> ARGS`, adding --fifo-dir where ctr takes it."""
        words = [str(a) for a in args]
        for n in (2, 1):
            if tuple(words[:n]) in _FIFO_COMMANDS:
                words[n:n] = ["--fifo-dir", str(self.fifo_dir)]
                break
        return run_tool(
            f"ctr{self.suffix}",
            "--address",
            str(self.address),
            "--namespace",
            namespace or self.namespace,
            *words,
            timeout=timeout,
            check=check,
            input=input,
        )

    def _namespace_pids(self) -> list[int]:
        """Processes still in containerd's mount namespaces, this run's and earlier ones'
        (orphaned shims, their children)."""
        namespaces = {self.mount_ns, *self.old_mount_ns}
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "ns" / "mnt") in namespaces:
                        pids.append(int(entry.name))
                except OSError:
                    continue
        return pids

    def restart(self, timeout: float = 30.0) -> ContainerdServer:
        """Stop containerd alone (SIGTERM; its shims and tasks keep running, as on a host
        upgrade) and start it again on the same root, state and sockets."""
        assert self.proc is not None and self.mount_ns is not None
        stop_process(self.proc)
        self.old_mount_ns.append(self.mount_ns)
        return self.start(timeout)

    def _kill_tasks(self) -> None:
        """Best effort: SIGKILL and delete every task, so no container outlives its shim."""
        listing = self.ctr("namespaces", "list", "--quiet", timeout=10, check=False)
        for ns in listing.stdout.split():
            tasks = self.ctr("tasks", "list", "--quiet", namespace=ns, timeout=10, check=False)
            for task in tasks.stdout.split():
                self.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", task, namespace=ns, timeout=10, check=False)
                self.ctr("tasks", "delete", "--force", task, namespace=ns, timeout=15, check=False)

    def stop(self) -> None:
        """Kill tasks, containerd, then anything left in its mount namespace; idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None and self.mount_ns:
            with contextlib.suppress(AssertionError, OSError):
                self._kill_tasks()
        stop_process(self.proc)
        if self.mount_ns or self.old_mount_ns:
            deadline = time.monotonic() + 10
            while (pids := self._namespace_pids()) and time.monotonic() < deadline:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)
            if pids:
                raise RuntimeError(f"processes left in containerd's mount namespace: {pids}")

    def __enter__(self) -> ContainerdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
