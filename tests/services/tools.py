"""Find the real peer binaries and run them with a timeout.

Binaries come from tests/tools/install-system-deps.sh (bin dir `$WASM_OCI_TOOLS/bin`, default
`<repo>/.cache/tools/bin`), then from PATH. Nothing is installed here: a missing binary is an
error that says which script to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = "tests/tools/install-system-deps.sh"


class MissingToolError(RuntimeError):
    """A peer binary the tests need is not installed."""


def tools_bin_dir() -> Path:
    """The bin dir the install script fills (it may not exist yet)."""
    prefix = os.environ.get("WASM_OCI_TOOLS")
    return (Path(prefix) if prefix else REPO_ROOT / ".cache" / "tools") / "bin"


def find_tool(name: str) -> str:
    """Absolute path of `name`: the tools bin dir first, then PATH."""
    candidate = tools_bin_dir() / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return str(Path(found).resolve())
    raise MissingToolError(
        f"{name!r} not found in {tools_bin_dir()} nor on PATH: run `bash {INSTALL_SCRIPT}` (set WASM_OCI_TOOLS to choose another prefix)"
    )


def format_result(result: subprocess.CompletedProcess[str]) -> str:
    """Command line, exit code and both outputs, for assertion messages."""
    cmd = " ".join(map(str, result.args)) if isinstance(result.args, Sequence) else str(result.args)
    return f"command: {cmd}\nexit code: {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"


def run_tool(
    tool: str,
    *args: str | os.PathLike[str],
    timeout: float = 60.0,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool (name looked up with find_tool, or a path) and capture its text output.

    With check=True a non-zero exit raises AssertionError carrying stdout and stderr, so a
    failing peer shows why in the test report. A timeout raises AssertionError as well.
    """
    exe = tool if os.sep in tool else find_tool(tool)
    argv = [exe, *map(str, args)]
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            input=input,
            cwd=cwd,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        raise AssertionError(f"timed out after {timeout}s: {' '.join(argv)}\n--- stdout ---\n{out}\n--- stderr ---\n{err}") from None
    if check and result.returncode != 0:
        raise AssertionError(format_result(result))
    return result


class ToolRunner:
    """`run_tool` bound to one tool and a private environment.

    Peers like oras, crane and cosign keep credentials in `$DOCKER_CONFIG/config.json`
    (else `~/.docker`): pointing DOCKER_CONFIG and HOME at a test dir keeps `oras login`
    off the real user's files.
    """

    def __init__(self, tool: str, home: Path, extra_env: Mapping[str, str] | None = None) -> None:
        self.exe = find_tool(tool)
        home.mkdir(parents=True, exist_ok=True)
        (home / ".docker").mkdir(exist_ok=True)
        self.home = home
        self.env = {**os.environ, "HOME": str(home), "DOCKER_CONFIG": str(home / ".docker"), **(extra_env or {})}

    def __call__(
        self,
        *args: str | os.PathLike[str],
        timeout: float = 60.0,
        check: bool = True,
        input: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run_tool(self.exe, *args, timeout=timeout, check=check, env=self.env, input=input, cwd=cwd)
