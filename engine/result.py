"""How a guest run ended, as a process-style exit status.

Statuses (documented for `wasm-oci run` and the shim):
  exit     the guest's own code: 0/1 from a wasi:cli component (WASI 0.2.0 `exit` and `run`
           have only ok/err), any code a preview 1 module passes to `proc_exit`;
  trap     134 (128 + SIGABRT, as wasmtime's CLI and an aborting native process);
  timeout  124 (as coreutils `timeout`);
  killed   128 + the signal number passed to `Execution.kill` (137 for SIGKILL);
  oom      137: the run's memories needed more than its memory limit (memory.py), and it
           was stopped as the kernel's OOM killer stops a process (SIGKILL).
A guest may itself exit with one of these numbers; `RunResult.reason` tells them apart.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Literal

import wasmtime

from wasm_oci.status import OOM_STATUS, TIMEOUT_STATUS, TRAP_STATUS, killed

__all__ = ["OOM_STATUS", "TIMEOUT_STATUS", "TRAP_STATUS", "Reason", "RunResult", "Stop", "describe", "trapped"]

Reason = Literal["exit", "trap", "timeout", "killed", "oom"]


@dataclass(frozen=True)
class RunResult:
    status: int
    reason: Reason
    message: str | None = None
    """What stopped the guest when it did not exit by itself (a trap, the timeout, a kill)."""
    elapsed: float = 0.0


@dataclass(frozen=True)
class Stop:
    """Why the host stopped a guest: the timeout, a kill (with its signal), or its memory limit."""

    reason: Literal["timeout", "killed", "oom"]
    signal: int = signal.SIGKILL
    limit: int | None = None
    """The memory limit an "oom" stop enforced."""

    def result(self, elapsed: float) -> RunResult:
        if self.reason == "timeout":
            return RunResult(TIMEOUT_STATUS, "timeout", f"timed out after {elapsed:.3f}s", elapsed)
        if self.reason == "oom":
            return RunResult(OOM_STATUS, "oom", f"out of memory: its memory limit is {self.limit} bytes", elapsed)
        name = next((known.name for known in signal.Signals if known == self.signal), f"signal {self.signal}")
        return RunResult(killed(self.signal), "killed", f"killed by {name}", elapsed)


def describe(error: wasmtime.WasmtimeError | wasmtime.Trap) -> str:
    """The line that names the trap, without wasmtime's backtrace: 'wasm trap: ...'."""
    text = error.message if isinstance(error, wasmtime.Trap) else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Caused by:" in lines:
        cause = lines[-1]
        return cause.split(": ", 1)[1] if cause[:1].isdigit() else cause
    return next((line for line in lines if line.startswith("wasm trap:")), lines[0] if lines else "trap")


def trapped(error: wasmtime.WasmtimeError | wasmtime.Trap, elapsed: float) -> RunResult:
    return RunResult(TRAP_STATUS, "trap", describe(error), elapsed)
