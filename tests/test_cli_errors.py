"""Bad input gets one clear line, a distinct exit code, no traceback, and nothing left behind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import wasmtime

from services.tools import ToolRunner
from services.wasmgen import HELLO


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_each_failure_has_its_own_exit_code(wasm_oci: ToolRunner, tmp_path: Path) -> None:
    script = tmp_path / "script.wasm"
    script.write_text("#!/bin/sh\necho not wasm\n")
    truncated = tmp_path / "truncated.wasm"
    truncated.write_bytes(HELLO.read_bytes()[:500])
    library = tmp_path / "library.wasm"
    library.write_bytes(wasmtime.wat2wasm("(component (core module $m))"))
    port = _closed_port()
    cases = {
        "not wasm": (("package", script), 4, f"{script}: not a WebAssembly binary (missing \\0asm magic)"),
        "truncated": (
            ("push", truncated, "oci:" + str(tmp_path / "l")),
            4,
            f"{truncated}: invalid WebAssembly component: unexpected end-of-file",
        ),
        "missing file": (("package", tmp_path / "nope.wasm"), 5, f"{tmp_path / 'nope.wasm'}: no such file"),
        "malformed ref": (("push", HELLO, "localhost:5000/Has Space"), 3, "invalid reference 'localhost:5000/Has Space'"),
        "bad repository": (("inspect", "localhost:5000/UPPER:1"), 3, "must be lowercase"),
        "unreachable": (
            ("push", HELLO, f"127.0.0.1:{port}/x:1", "--plain-http"),
            8,
            f"cannot reach registry 127.0.0.1:{port}: connection refused",
        ),
        "unknown host": (("inspect", "no-such-host.invalid/x:1"), 8, "cannot reach registry no-such-host.invalid: unknown host"),
        "not in store": (("inspect", "never-pushed:1"), 5, "never-pushed:1 not found in"),
        "missing --dir": (("run", "--dir", f"{tmp_path}/nope:/data", HELLO), 5, f"--dir {tmp_path}/nope: no such directory"),
        "option after SOURCE": (("run", HELLO, "--timeout", "5"), 2, "--timeout after SOURCE would go to the guest"),
        "bad SOURCE_DATE_EPOCH": (("package", HELLO, "--created", "now"), 2, "neither RFC 3339"),
        "http trigger without a command": (
            ("push", library, "oci:" + str(tmp_path / "l"), "--trigger", "http"),
            2,
            "library.wasm: trigger http needs a runnable command or a wasi:http proxy, but this component exports neither wasi:cli/run nor wasi:http/incoming-handler (exports: none)",
        ),
        "directory as SOURCE": (("run", tmp_path), 3, f"{tmp_path} is a directory; expected a .wasm file"),
    }
    codes = set()
    for name, (args, code, message) in cases.items():
        result = wasm_oci(*args, check=False)
        line = _one_line(result.stderr)
        assert result.returncode == code, (name, result.returncode, line)
        assert line.startswith("wasm-oci: error: ") and message in line, (name, line)
        codes.add(code)
    assert codes == {2, 3, 4, 5, 8}
    assert not (tmp_path / "l").exists(), "a failed push must not create its destination"


def test_usage_errors_are_click_errors(wasm_oci: ToolRunner) -> None:
    result = wasm_oci("package", HELLO, "--created", "yesterday", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "neither RFC 3339" in result.stderr


@pytest.mark.parametrize("args", [("pull", "localhost:1/x:1", "--plain-http", "-o", "{out}")])
def test_failed_pull_keeps_an_existing_output(wasm_oci: ToolRunner, tmp_path: Path, args: tuple[str, ...]) -> None:
    out = tmp_path / "keep.wasm"
    out.write_bytes(b"mine")
    result = wasm_oci(*[a.format(out=out) for a in args], check=False)
    assert result.returncode == 8
    assert out.read_bytes() == b"mine" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.wasm", "wasm-oci-home"]


def test_serve_on_an_address_in_use_is_its_own_error(wasm_oci: ToolRunner) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = wasm_oci("serve", HELLO, "--listen", f"127.0.0.1:{taken.getsockname()[1]}", check=False)
    assert result.returncode == 15 and "cannot listen on" in _one_line(result.stderr)
