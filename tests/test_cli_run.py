"""`wasm-oci run` and `wasm-oci serve` as a user runs them: real processes, real components,
a real local store and registry."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime
from test_engine import cli_component

from services.startup import loaded

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HELLO = str(EXAMPLES / "hello" / "hello.wasm")
SPIN = str(EXAMPLES / "spin" / "spin.wasm")
WASM_OCI = str(Path(sys.executable).parent / "wasm-oci")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A private WASM_OCI_HOME: local store, compile cache, no trust policy."""
    return tmp_path / "home"


def wasm_oci(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WASM_OCI_HOME": str(home)}
    return subprocess.run([WASM_OCI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def write_wat(path: Path, text: str) -> str:
    path.write_bytes(wasmtime.wat2wasm(text))
    return str(path)


def test_run_passes_args_env_and_dirs(home: Path, tmp_path: Path) -> None:
    (tmp_path / "greeting.txt").write_text("from a preopen\n")
    done = wasm_oci(home, "run", "-e", "GREETING=hey", "--dir", f"{tmp_path}:/data:ro", HELLO, "--", "one", "--two")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "Hello from wasm-oci!\narg: hello.wasm\narg: one\narg: --two\nGREETING=hey\nfrom a preopen\n"


def test_exit_status_is_the_guests(home: Path, tmp_path: Path) -> None:
    assert wasm_oci(home, "run", "-e", "EXIT_CODE=9", HELLO).returncode == 1  # WASI 0.2.0: err = 1
    exit42 = write_wat(
        tmp_path / "exit42.wasm",
        """(module (import "wasi_snapshot_preview1" "proc_exit" (func $e (param i32)))
      (memory (export "memory") 1) (func (export "_start") (call $e (i32.const 42))))""",
    )
    assert wasm_oci(home, "run", exit42).returncode == 42


def test_trap_timeout_and_memory_cap_have_their_statuses(home: Path, tmp_path: Path) -> None:
    trap = wasm_oci(home, "run", write_wat(tmp_path / "trap.wasm", '(module (func (export "_start") unreachable))'))
    assert (trap.returncode, trap.stderr) == (134, "wasm-oci: trap: wasm trap: wasm `unreachable` instruction executed\n")
    timeout = wasm_oci(home, "run", "--timeout", "0.2", SPIN)
    assert timeout.returncode == 124 and timeout.stderr.startswith("wasm-oci: timeout: timed out after 0.2")
    grow = write_wat(
        tmp_path / "grow.wasm",
        """(module (memory (export "memory") 1)
      (func (export "_start") (if (i32.eq (memory.grow (i32.const 256)) (i32.const -1)) (then unreachable))))""",
    )
    oom = wasm_oci(home, "run", "--memory", "8M", grow)
    assert (oom.returncode, oom.stderr) == (137, f"wasm-oci: oom: out of memory: its memory limit is {8 << 20} bytes\n")
    assert wasm_oci(home, "run", "--memory", "32M", grow).returncode == 0


def test_ctrl_c_stops_a_spinning_guest(home: Path, tmp_path: Path) -> None:
    ready_then_spin = write_wat(
        tmp_path / "spin.wasm",
        """(module
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "ready\\n")
      (func (export "_start")
        (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 6))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
        (loop $forever (br $forever))))""",
    )
    env = {**os.environ, "WASM_OCI_HOME": str(home)}
    proc = subprocess.Popen([WASM_OCI, "run", ready_then_spin], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"  # the guest is spinning now
    proc.send_signal(signal.SIGINT)
    assert proc.wait(5) == 130
    assert "killed by SIGINT" in (proc.stderr.read() if proc.stderr else "")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run", "/etc/hostname"], 4, "hostname: not a WebAssembly binary"),
        (["run", "missing.wasm"], 5, "missing.wasm: no such file"),
        (["run", "--dir", "/nonexistent:/data", HELLO], 5, "--dir /nonexistent: no such directory"),
        (["run", "--memory", "lots", HELLO], 2, "is not a size"),
    ],
)
def test_user_errors_are_one_line_with_their_exit_code(home: Path, args: list[str], code: int, message: str) -> None:
    done = wasm_oci(home, *args)
    assert done.returncode == code
    assert message in done.stderr and "Traceback" not in done.stderr


def test_unsatisfied_import_is_named(home: Path, tmp_path: Path) -> None:
    needs = tmp_path / "needs.wasm"
    needs.write_bytes(
        cli_component(
            '(func (export "run") (result i32) (i32.const 0))', '(import "acme:missing/thing@1.0.0" (instance (export "f" (func))))'
        )
    )
    done = wasm_oci(home, "run", str(needs))
    assert (done.returncode, done.stderr) == (
        20,
        "wasm-oci: error: needs.wasm imports `acme:missing/thing@1.0.0`, which this host does not provide (it provides WASI 0.2 and preview 1)\n",
    )


def test_run_a_local_store_reference_and_refuse_a_tampered_layer(home: Path) -> None:
    assert wasm_oci(home, "package", HELLO, "-t", "hello:v1").returncode == 0
    done = wasm_oci(home, "run", "-e", "GREETING=stored", "hello:v1", "x")
    assert (done.returncode, done.stdout) == (0, "Hello from wasm-oci!\narg: /hello.wasm\narg: x\nGREETING=stored\n")
    layer = max((home / "store" / "blobs" / "sha256").iterdir(), key=lambda blob: blob.stat().st_size)
    layer.chmod(0o644)
    layer.write_bytes(layer.read_bytes().replace(b"Hello from", b"Jello from"))  # same size, other digest
    tampered = wasm_oci(home, "run", "hello:v1")
    assert tampered.returncode == 6 and "does not match" in tampered.stderr
    assert tampered.stdout == ""


@pytest.mark.registry
def test_run_pulls_a_registry_reference(home: Path, registry: object) -> None:
    ref = f"{registry.host}/engine/hello:v1"  # type: ignore[attr-defined]
    assert wasm_oci(home / "pusher", "push", "--plain-http", HELLO, ref).returncode == 0
    done = wasm_oci(home, "run", "--plain-http", ref, "--", "from-registry")
    assert (done.returncode, done.stdout) == (0, "Hello from wasm-oci!\narg: /hello.wasm\narg: from-registry\n")
    assert wasm_oci(home, "run", "--plain-http", ref).returncode == 0  # again: blobs already stored, code cached


def test_serve_answers_requests_and_stops_on_ctrl_c(home: Path) -> None:
    env = {**os.environ, "WASM_OCI_HOME": str(home)}
    proc = subprocess.Popen(
        [WASM_OCI, "serve", str(EXAMPLES / "http" / "http.wasm"), "--listen", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline()
        assert banner.startswith("Serving ") and " on http://127.0.0.1:" in banner
        port = int(banner.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/echo?x=1", body=b"served by the cli")
        response = conn.getresponse()
        assert (response.status, response.read(), response.getheader("X-Query")) == (200, b"SERVED BY THE CLI", "x=1")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) == 0


def test_running_a_file_imports_no_registry_code(tmp_path: Path) -> None:
    """`run FILE.wasm` pays for the engine only: the registry, store and signing code (and
    oras-py, requests, cryptography) stay unimported, ~40 ms of a run's start-up."""
    env = {"HOME": str(tmp_path), "WASM_OCI_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    names = ("oras", "requests", "cryptography", "http.client", "wasm_oci.api", "wasm_oci.oci.distribution", "wasm_oci.signing", "wasmtime")
    assert loaded(["run", HELLO], env, names) == ["wasmtime"]
