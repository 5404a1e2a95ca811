"""The Wasm engine: run wasi:cli components and WASI preview 1 modules in a sandbox.

    from wasm_oci.engine import Engine, RunSpec, Preopen
    engine = Engine()                                   # one per process: shares compiled code
    program = engine.load(wasm_bytes, digest="sha256:...", name="hello.wasm")
    result = engine.run(program, RunSpec(args=["hello.wasm"], stdout=Path("out")))
    result.status, result.reason                        # see result.py for the statuses

For a run another thread may stop: `execution = engine.execution(program, spec)`, then
`execution.start()` (or `.run()` on a thread of your own), `execution.kill()`, `execution.wait()`.
`execution.prepare()` instantiates ahead of time, so a later `run()` only enters the guest.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing it costs ~6 ms, and `run` imports this package early
if TYPE_CHECKING:
    from typing import Any

    from wasm_oci.engine.program import Program
    from wasm_oci.engine.result import TIMEOUT_STATUS, TRAP_STATUS, RunResult
    from wasm_oci.engine.runner import Engine, Execution
    from wasm_oci.engine.spec import INHERIT, Preopen, RunSpec

# Names resolve on first use (PEP 562), so importing `wasm_oci.engine.spec` for the plain
# dataclasses does not load wasmtime (~40 ms): the CLI's other commands never pay for it.
_HOMES = {
    "Engine": "runner",
    "Execution": "runner",
    "Program": "program",
    "RunSpec": "spec",
    "Preopen": "spec",
    "INHERIT": "spec",
    "RunResult": "result",
    "TRAP_STATUS": "result",
    "TIMEOUT_STATUS": "result",
}
__all__ = ["INHERIT", "TIMEOUT_STATUS", "TRAP_STATUS", "Engine", "Execution", "Preopen", "Program", "RunResult", "RunSpec"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(__import__(f"{__name__}.{_HOMES[name]}", fromlist=[name]), name)
