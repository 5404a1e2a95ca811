"""A private containerd with the wasm-oci shim on its PATH, and Wasm images pulled into it.

The shim goes in as the fast launcher (`python -m wasm_oci.shim.launcher`), the way the docs
tell hosts to install it. The shim daemons inherit containerd's environment: WASM_OCI_HOME
points their precompile cache (and default trust policy) at a test dir, and their run dir
lives under containerd's private /run/containerd. Images are pushed with the real `wasm-oci`
CLI to the test registry and pulled with the real `ctr`.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import wasmtime

from .containerd import ContainerdServer
from .registry import RegistryServer
from .tools import find_tool, run_tool

RUNTIME = "io.containerd.wasm-oci.v1"
REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"


def module(body: str) -> bytes:
    """A WASI preview 1 core module from WAT: `body` goes inside `(module ...)` after the
    `proc_exit` and `fd_write` imports."""
    return bytes(
        wasmtime.wat2wasm(
            '(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))'
            ' (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))'
            f" {body})"
        )
    )


EXIT_42 = module('(memory (export "memory") 1) (func (export "_start") (call $exit (i32.const 42)))')
TRAP = module('(memory (export "memory") 1) (func (export "_start") unreachable)')
# Grows its memory 1 MiB at a time until refused, then traps: the memory limit's victim.
MEMORY_HOG = module(
    '(memory (export "memory") 1)'
    ' (func (export "_start") (loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable)'
)


def sleeper(seconds: int, status: int) -> bytes:
    """Sleeps in a host call (poll_oneoff on the monotonic clock), then exits with `status`."""
    return module(
        '(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))'
        ' (memory (export "memory") 1)'
        ' (func (export "_start")'
        "  (i32.store (i32.const 16) (i32.const 1))"
        f"  (i64.store (i32.const 24) (i64.const {seconds * 1_000_000_000}))"
        "  (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))"
        f"  (call $exit (i32.const {status})))"
    )


# A CGI handler (preview 1) that behaves by its request path: /trap traps, /spin never ends,
# /hog grows its memory until refused and traps, /slow answers after 1 s in a clock wait, any
# other path answers 200 "ok".
HTTP_PROBE = module(
    '(import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))'
    ' (import "wasi_snapshot_preview1" "environ_get" (func $environ (param i32 i32) (result i32)))'
    ' (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))'
    ' (memory (export "memory") 2)'
    ' (data (i32.const 256) "PATH_INFO=/trap\\00") (data (i32.const 288) "PATH_INFO=/spin\\00")'
    ' (data (i32.const 320) "PATH_INFO=/hog\\00") (data (i32.const 352) "PATH_INFO=/slow\\00")'
    ' (data (i32.const 384) "Content-Type: text/plain\\n\\nok\\n")'
    " (func $has (param $needle i32) (param $len i32) (result i32) (local $i i32) (local $j i32) (local $end i32)"
    "  (local.set $end (i32.add (i32.const 8192) (i32.load (i32.const 4))))"
    "  (local.set $i (i32.const 8192))"
    "  (block $no (loop $outer"
    "   (br_if $no (i32.gt_u (i32.add (local.get $i) (local.get $len)) (local.get $end)))"
    "   (local.set $j (i32.const 0))"
    "   (block $mismatch (loop $inner"
    "     (br_if $mismatch (i32.ne (i32.load8_u (i32.add (local.get $i) (local.get $j)))"
    "                              (i32.load8_u (i32.add (local.get $needle) (local.get $j)))))"
    "     (local.set $j (i32.add (local.get $j) (i32.const 1)))"
    "     (br_if $inner (i32.lt_u (local.get $j) (local.get $len))))"
    "    (return (i32.const 1)))"
    "   (local.set $i (i32.add (local.get $i) (i32.const 1)))"
    "   (br $outer)))"
    "  (i32.const 0))"
    ' (func (export "_start")'
    "  (drop (call $sizes (i32.const 0) (i32.const 4)))"
    "  (drop (call $environ (i32.const 1024) (i32.const 8192)))"
    "  (if (call $has (i32.const 256) (i32.const 16)) (then unreachable))"
    "  (if (call $has (i32.const 288) (i32.const 16)) (then (loop $forever (br $forever))))"
    "  (if (call $has (i32.const 320) (i32.const 15)) (then"
    "    (loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable))"
    "  (if (call $has (i32.const 352) (i32.const 16)) (then"
    "    (i32.store (i32.const 4112) (i32.const 1))"
    "    (i64.store (i32.const 4120) (i64.const 1000000000))"
    "    (drop (call $poll (i32.const 4096) (i32.const 4160) (i32.const 1) (i32.const 4224)))))"
    "  (i32.store (i32.const 600) (i32.const 384)) (i32.store (i32.const 604) (i32.const 29))"
    "  (drop (call $write (i32.const 1) (i32.const 600) (i32.const 1) (i32.const 608))))"
)


@dataclass
class ShimHarness:
    containerd: ContainerdServer
    registry: RegistryServer
    home: Path
    images: dict[str, str] = field(default_factory=dict)

    @property
    def cli_home(self) -> Path:
        return self.home / "cli"

    def _cli(self, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
        exe = Path(sys.executable).with_name("wasm-oci")
        env = {**os.environ, "WASM_OCI_HOME": str(self.cli_home), "DOCKER_CONFIG": str(self.cli_home / ".docker")}
        return run_tool(str(exe), *args, env=env, timeout=120)

    def keygen(self, prefix: Path) -> tuple[Path, Path]:
        """A password-less key pair written by `wasm-oci keygen`: (private, public)."""
        self._cli("keygen", "--no-password", "--output-key-prefix", prefix)
        return prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")

    def push(self, name: str, wasm: Path | bytes, sign_key: Path | None = None, pull: bool = True, options: Sequence[str] = ()) -> str:
        """Push a .wasm as an OCI image with `wasm-oci push [options]` (signed with `sign_key`), pull
        it into containerd with `ctr` (unless `pull` is false: CRI pulls its own); its ref."""
        if name in self.images:
            return self.images[name]
        if isinstance(wasm, bytes):
            path = self.home / f"{name}.wasm"
            path.write_bytes(wasm)
            wasm = path
        ref = f"{self.registry.host}/shim/{name}:1"
        self._cli("push", wasm, ref, "--plain-http", *options, *(["--sign-key", str(sign_key)] if sign_key else []))
        if pull:
            self.containerd.ctr("images", "pull", "--plain-http", ref, timeout=120)
        self.images[name] = ref
        return ref

    def push_rootfs_image(self, name: str, wasm: Path, entrypoint: str, config: dict[str, object] | None = None, pull: bool = True) -> str:
        """An ordinary Linux image whose one tar layer holds the wasm at `entrypoint` (more
        image `config` keys, e.g. StopSignal, added), pulled into containerd with `ctr` unless
        `pull` is false."""
        from wasm_oci.oci import reference
        from wasm_oci.oci.descriptor import Descriptor
        from wasm_oci.oci.options import RegistryOptions
        from wasm_oci.oci.remote import RemoteRepository

        tar_bytes = io.BytesIO()
        with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
            info = tarfile.TarInfo(entrypoint.lstrip("/"))
            data = wasm.read_bytes()
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        diff_id = Descriptor.for_bytes("", tar_bytes.getvalue()).digest
        layer_data = gzip.compress(tar_bytes.getvalue(), mtime=0)
        layer = Descriptor.for_bytes("application/vnd.oci.image.layer.v1.tar+gzip", layer_data)
        config_data = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Entrypoint": [entrypoint], "Env": ["PATH=/"], **(config or {})},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }
        ).encode()
        config_descriptor = Descriptor.for_bytes("application/vnd.oci.image.config.v1+json", config_data)
        manifest_data = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_descriptor.to_json(),
                "layers": [layer.to_json()],
            }
        ).encode()
        manifest = Descriptor.for_bytes("application/vnd.oci.image.manifest.v1+json", manifest_data)
        ref = f"{self.registry.host}/shim/{name}:1"
        parsed = reference.parse(ref)
        assert isinstance(parsed, reference.RegistryReference)
        target = RemoteRepository(parsed, RegistryOptions(plain_http=True))
        target.push_blob(layer, [layer_data])
        target.push_blob(config_descriptor, [config_data])
        target.push_manifest(manifest, manifest_data, "1")
        if pull:
            self.containerd.ctr("images", "pull", "--plain-http", ref, timeout=120)
        self.images[name] = ref
        return ref

    def ctr_run(
        self, ref: str, task_id: str, *args: str, flags: Sequence[str] = (), timeout: float = 60, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """`ctr run --rm --runtime io.containerd.wasm-oci.v1 [flags] REF ID [args]`."""
        return self.containerd.ctr("run", "--rm", "--runtime", RUNTIME, *flags, ref, task_id, *args, timeout=timeout, check=check)

    def run_background(self, ref: str, task_id: str, *args: str, flags: Sequence[str] = ()) -> subprocess.Popen[str]:
        """An attached `ctr run --rm` left running (ctr waits for the task)."""
        argv = [
            find_tool("ctr" + self.containerd.suffix),
            "--address",
            str(self.containerd.address),
            "--namespace",
            self.containerd.namespace,
            "run",
            "--fifo-dir",
            str(self.containerd.fifo_dir),
            "--rm",
            "--runtime",
            RUNTIME,
            *flags,
            ref,
            task_id,
            *args,
        ]
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def task_status(self, task_id: str) -> str | None:
        """STATUS column of `ctr task ls` for the task (None when it is not listed)."""
        for line in self.containerd.ctr("task", "ls").stdout.splitlines()[1:]:
            words = line.split()
            if words and words[0] == task_id:
                return words[-1]
        return None

    def wait_status(self, task_id: str, status: str | None, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while (seen := self.task_status(task_id)) != status:
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} is {seen}, not {status}, after {timeout}s")
            time.sleep(0.05)

    def daemons(self) -> list[int]:
        """Pids of live shim daemons (`... -m wasm_oci.shim ... serve`) of this containerd."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if b"wasm_oci.shim" in argv and b"serve" in argv and str(self.containerd.address).encode() in environ:
                pids.append(int(entry.name))
        return sorted(pids)


def shim_harness(registry: RegistryServer, release: str = "2.1", **extra_env: str) -> Iterator[ShimHarness]:
    """A started containerd of `release` with the shim installed; stopped (with every shim
    daemon) afterwards. Its dir is a short mkdtemp: unix socket paths are limited to 108 bytes."""
    workdir = Path(tempfile.mkdtemp(prefix=f"wasm-oci-shim{release}-"))
    home = workdir / "home"
    home.mkdir()
    server = ContainerdServer(workdir=workdir, release=release, namespace="shim-test", extra_env={"WASM_OCI_HOME": str(home), **extra_env})
    try:
        server.start()
        subprocess.run([sys.executable, "-m", "wasm_oci.shim.launcher", str(server.shim_bin_dir)], check=True, capture_output=True)
        yield ShimHarness(server, registry, home)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
