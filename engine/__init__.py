"""The Wasm engine: run wasi:cli components and WASI preview 1 modules in a sandbox.

    from wasm_oci.engine import Engine, RunSpec, Preopen
    engine = Engine()                                   # one per process: shares compiled code
    program = engine.load(wasm_bytes, digest="sha256:...", name="hello.wasm")
    result = engine.run(program, RunSpec(args=["hello.wasm"], stdout=Path("out")))
    result.status, result.reason                        # see result.py for the statuses

For a run another thread may stop: `execution = engine.execution(program, spec)`, then
`execution.start()` (or `.run()` on a thread of your own), `execution.kill()`, `execution.wait()`.
"""

from wasm_oci.engine.program import Program
from wasm_oci.engine.result import TIMEOUT_STATUS, TRAP_STATUS, RunResult
from wasm_oci.engine.runner import Engine, Execution
from wasm_oci.engine.spec import INHERIT, Preopen, RunSpec

__all__ = ["Engine", "Execution", "Program", "RunSpec", "Preopen", "INHERIT", "RunResult", "TRAP_STATUS", "TIMEOUT_STATUS"]
