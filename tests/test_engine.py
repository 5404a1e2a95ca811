"""The engine against real wasmtime and the real example components: WASI mapping, exit
statuses, traps, limits, kill, concurrency and bad input."""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

import pytest
import wasmtime

from wasm_oci.engine import TIMEOUT_STATUS, TRAP_STATUS, Engine, Preopen, RunResult, RunSpec
from wasm_oci.engine.result import OOM_STATUS
from wasm_oci.errors import InvalidWasm, NoEntryPoint, NotFound, UnsatisfiedImport

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HELLO = (EXAMPLES / "hello" / "hello.wasm").read_bytes()
MODULE = (EXAMPLES / "module" / "hello-module.wasm").read_bytes()
SPIN = (EXAMPLES / "spin" / "spin.wasm").read_bytes()
HTTP = (EXAMPLES / "http" / "http.wasm").read_bytes()


def cli_component(core_module: str, imports: str = "") -> bytes:
    """A wasi:cli component around a core module whose `run` returns 0 (ok) or 1 (err)."""
    return wasmtime.wat2wasm(f"""(component {imports}
      (core module $m {core_module})
      (core instance $i (instantiate $m))
      (func $run (result (result)) (canon lift (core func $i "run")))
      (instance $cli (export "run" (func $run)))
      (export "wasi:cli/run@0.2.0" (instance $cli)))""")


# Grows its memory by 16 MiB; traps (as a guest out of memory would) if that fails.
GROW = cli_component("""(memory 1)
  (func (export "run") (result i32)
    (if (i32.eq (memory.grow (i32.const 256)) (i32.const -1)) (then unreachable))
    (i32.const 0))""")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(cache_dir=tmp_path_factory.mktemp("compiled"))


def run(engine: Engine, wasm: bytes, out: Path, **spec: object) -> tuple[RunResult, str]:
    """Run with stdout to a file; the result and what the guest printed."""
    result = engine.run(engine.load(wasm, name="guest.wasm"), RunSpec(stdout=out, **spec))  # type: ignore[arg-type]
    return result, out.read_text() if out.exists() else ""


# -- WASI mapping ------------------------------------------------------------------------------


def test_args_and_env_are_exactly_what_the_spec_gives(engine: Engine, tmp_path: Path) -> None:
    result, out = run(engine, HELLO, tmp_path / "out", args=["hello.wasm", "one", "two words"], env={"GREETING": "hi there"})
    assert result == RunResult(0, "exit", None, result.elapsed)
    assert out == "Hello from wasm-oci!\narg: hello.wasm\narg: one\narg: two words\nGREETING=hi there\n"


def test_preopened_directory_is_readable_at_its_guest_path(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "greeting.txt").write_text("from the host\n")
    _, out = run(engine, HELLO, tmp_path / "out", preopens=[Preopen(tmp_path / "data", "/data", read_only=True)])
    assert out.endswith("from the host\n")


def test_stdin_stdout_stderr_as_fifos(engine: Engine, tmp_path: Path) -> None:
    stdin, stdout = tmp_path / "in.fifo", tmp_path / "out.fifo"
    os.mkfifo(stdin)
    os.mkfifo(stdout)
    received: list[bytes] = []

    def feed() -> None:
        with open(stdin, "wb") as pipe:
            pipe.write(b"through a fifo")

    def drain() -> None:
        with open(stdout, "rb") as pipe:
            received.append(pipe.read())

    threads = [threading.Thread(target=feed), threading.Thread(target=drain)]
    for thread in threads:
        thread.start()
    program = engine.load(HTTP, name="http.wasm")
    result = engine.run(program, RunSpec(args=["http.wasm"], stdin=stdin, stdout=stdout, stderr=tmp_path / "err"))
    for thread in threads:
        thread.join(5)
    assert result.status == 0
    assert received == [b"Status: 200 OK\nContent-Type: text/plain; charset=utf-8\n\nTHROUGH A FIFO"]
    assert (tmp_path / "err").read_text() == "http: uppercased 14 bytes\n"


def test_stdin_from_a_file_and_from_bytes(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "in").write_bytes(b"file body")
    _, from_file = run(engine, HTTP, tmp_path / "a", stdin=tmp_path / "in")
    _, from_bytes = run(engine, HTTP, tmp_path / "b", stdin=b"byte body")
    _, empty = run(engine, HTTP, tmp_path / "c")
    assert from_file.endswith("\n\nFILE BODY")
    assert from_bytes.endswith("\n\nBYTE BODY")
    assert empty.endswith("\n\n")


def test_missing_paths_are_reported_by_name(engine: Engine, tmp_path: Path) -> None:
    program = engine.load(HELLO, name="hello.wasm")
    with pytest.raises(NotFound, match="no-such-dir: no such directory"):
        engine.run(program, RunSpec(preopens=[Preopen(tmp_path / "no-such-dir", "/data")]))
    with pytest.raises(NotFound, match=r"stdin .*missing: cannot open"):
        engine.run(program, RunSpec(stdin=tmp_path / "missing"))


# -- exit statuses and traps -------------------------------------------------------------------


@pytest.mark.parametrize(("exit_code", "status"), [(None, 0), ("0", 0), ("7", 1)])
def test_component_exit_status_is_the_guests(engine: Engine, tmp_path: Path, exit_code: str | None, status: int) -> None:
    env = {"EXIT_CODE": exit_code} if exit_code else {}
    result, out = run(engine, HELLO, tmp_path / "out", env=env)
    assert (result.status, result.reason) == (status, "exit")
    assert out.startswith("Hello from wasm-oci!\n")  # exit happens after the output


def test_preview1_module_runs_start_and_keeps_any_exit_code(engine: Engine, tmp_path: Path) -> None:
    result, out = run(engine, MODULE, tmp_path / "out")
    assert (result.status, out) == (0, "Hello from a wasip1 module!\n")
    exit42 = wasmtime.wat2wasm("""(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1) (func (export "_start") (call $exit (i32.const 42))))""")
    assert run(engine, exit42, tmp_path / "out42")[0].status == 42


def test_a_trap_has_its_own_status_and_names_the_trap(engine: Engine, tmp_path: Path) -> None:
    divide = wasmtime.wat2wasm('(module (func (export "_start") (drop (i32.div_u (i32.const 1) (i32.const 0)))))')
    result, _ = run(engine, divide, tmp_path / "out")
    assert (result.status, result.reason, result.message) == (TRAP_STATUS, "trap", "wasm trap: integer divide by zero")
    assert TRAP_STATUS == 134


# -- limits ------------------------------------------------------------------------------------


def test_memory_limit_stops_the_guest_as_out_of_memory_and_leaves_the_host_working(engine: Engine, tmp_path: Path) -> None:
    capped, _ = run(engine, GROW, tmp_path / "a", memory_limit=8 << 20)
    assert (capped.status, capped.reason) == (OOM_STATUS, "oom")
    assert capped.message == f"out of memory: its memory limit is {8 << 20} bytes"
    roomy, _ = run(engine, GROW, tmp_path / "b", memory_limit=32 << 20)
    assert (roomy.status, roomy.reason) == (0, "exit")
    after, out = run(engine, HELLO, tmp_path / "c")
    assert after.status == 0 and out.startswith("Hello")


def test_a_guest_that_copes_with_a_refused_growth_is_still_out_of_memory(engine: Engine, tmp_path: Path) -> None:
    """As under the kernel's OOM killer: a growth past the limit ends the guest, whatever it does next."""
    copes = wasmtime.wat2wasm('(module (memory 1) (func (export "_start") (drop (memory.grow (i32.const 1000)))))')
    result, _ = run(engine, copes, tmp_path / "out", memory_limit=1 << 20)
    assert (result.status, result.reason) == (OOM_STATUS, "oom")


def test_the_limit_covers_all_memories_of_a_run_together(engine: Engine, tmp_path: Path) -> None:
    """Two memories of 3 MiB each fit a 4 MiB cap one by one, not together."""
    two = wasmtime.wat2wasm("""(module (memory $a 1) (memory $b 1)
      (func (export "_start") (drop (memory.grow $a (i32.const 47))) (drop (memory.grow $b (i32.const 47)))))""")
    assert run(engine, two, tmp_path / "a", memory_limit=4 << 20)[0].reason == "oom"
    assert run(engine, two, tmp_path / "b", memory_limit=7 << 20)[0].reason == "exit"


def test_what_a_run_holds_is_counted_until_it_ends(engine: Engine) -> None:
    """A guest holding 40 MiB (then spinning) shows 40 MiB used from another thread; nothing after."""
    hold = wasmtime.wat2wasm('(module (memory 1) (func (export "_start") (drop (memory.grow (i32.const 640))) (loop $l (br $l))))')
    execution = engine.execution(engine.load(hold, name="hold.wasm"), RunSpec())
    execution.start()
    deadline = time.monotonic() + 5
    while execution.memory.used < (41 << 20) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert execution.memory.used == 641 * 65536
    execution.kill()
    assert execution.wait(5) is not None
    assert (execution.memory.used, execution.memory.peak) == (0, 641 * 65536)


def test_memory_cap_below_the_initial_memory_fails_instantiation(engine: Engine, tmp_path: Path) -> None:
    big = wasmtime.wat2wasm('(module (memory 300) (func (export "_start")))')  # 300 pages = 18.75 MiB
    result, _ = run(engine, big, tmp_path / "out", memory_limit=1 << 20)
    assert (result.status, result.reason) == (OOM_STATUS, "oom")


def test_timeout_stops_a_spinning_guest(engine: Engine, tmp_path: Path) -> None:
    result, _ = run(engine, SPIN, tmp_path / "out", timeout=0.2)
    assert (result.status, result.reason) == (TIMEOUT_STATUS, "timeout")
    assert 0.2 <= result.elapsed < 0.35


def test_kill_from_another_thread_stops_a_spinning_guest_within_100ms(engine: Engine) -> None:
    program = engine.load(SPIN, name="spin.wasm")
    latencies = []
    for _ in range(10):
        execution = engine.execution(program, RunSpec())
        execution.start()
        time.sleep(0.02)  # let it spin
        assert execution.result is None
        killed_at = time.perf_counter()
        execution.kill()
        result = execution.wait(1.0)
        latencies.append(time.perf_counter() - killed_at)
        assert result is not None and (result.status, result.reason) == (137, "killed")
    print(f"kill latency: median {statistics.median(latencies) * 1e3:.3f} ms, max {max(latencies) * 1e3:.3f} ms")
    assert max(latencies) < 0.1


def test_kill_before_start_and_with_another_signal(engine: Engine) -> None:
    program = engine.load(SPIN, name="spin.wasm")
    early = engine.execution(program, RunSpec())
    early.kill(15)
    result = early.run()
    assert (result.status, result.reason, result.message) == (143, "killed", "killed by SIGTERM")
    assert result.elapsed < 0.01  # never entered
    finished = engine.execution(engine.load(HELLO, name="hello.wasm"), RunSpec())
    assert finished.run().status == 0
    finished.kill()  # after the end: nothing changes
    assert finished.result is not None and finished.result.reason == "exit"


def test_killing_one_guest_leaves_the_others_running(engine: Engine) -> None:
    program = engine.load(SPIN, name="spin.wasm")
    victim, bystander = engine.execution(program, RunSpec()), engine.execution(program, RunSpec(timeout=0.3))
    victim.start()
    bystander.start()
    time.sleep(0.05)
    victim.kill()
    assert victim.wait(1.0) is not None
    assert bystander.result is None  # the epoch moved for both, only the victim stopped
    result = bystander.wait(1.0)
    assert result is not None and result.reason == "timeout"


# -- concurrency -------------------------------------------------------------------------------


def test_guests_run_in_parallel_threads(engine: Engine) -> None:
    """Four guests spinning 0.5 s each end together: Wasm does not hold the GIL (serially: 2 s)."""
    program = engine.load(SPIN, name="spin.wasm")
    executions = [engine.execution(program, RunSpec(timeout=0.5)) for _ in range(4)]
    began = time.perf_counter()
    for execution in executions:
        execution.start()
    results = [execution.wait(5) for execution in executions]
    assert all(result is not None and result.reason == "timeout" for result in results), results
    assert time.perf_counter() - began < 1.2


def test_concurrent_guests_keep_their_own_args_and_output(engine: Engine, tmp_path: Path) -> None:
    program = engine.load(HELLO, name="hello.wasm")
    outputs = [tmp_path / f"out{i}" for i in range(16)]

    def one(i: int) -> None:
        engine.run(program, RunSpec(args=["hello.wasm", str(i)], env={"GREETING": f"g{i}"}, stdout=outputs[i]))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    for i, out in enumerate(outputs):
        assert out.read_text() == f"Hello from wasm-oci!\narg: hello.wasm\narg: {i}\nGREETING=g{i}\n"


# -- bad input ---------------------------------------------------------------------------------


def test_not_wasm_and_truncated_wasm_are_invalid(engine: Engine) -> None:
    with pytest.raises(InvalidWasm, match=r"notes\.txt: not a WebAssembly binary"):
        engine.load(b"hello, not wasm", name="notes.txt")
    with pytest.raises(InvalidWasm, match=r"cut\.wasm: invalid WebAssembly component: unexpected end-of-file"):
        engine.load(HELLO[:300], name="cut.wasm")


def test_an_import_the_host_lacks_is_named(engine: Engine) -> None:
    needs = cli_component(
        '(func (export "run") (result i32) (i32.const 0))', '(import "acme:missing/thing@1.0.0" (instance (export "f" (func))))'
    )
    program = engine.load(needs, name="needs.wasm")
    with pytest.raises(UnsatisfiedImport, match=r"needs\.wasm imports `acme:missing/thing@1\.0\.0`"):
        engine.run(program, RunSpec())
    module = wasmtime.wat2wasm('(module (import "env" "f" (func)) (func (export "_start")))')
    with pytest.raises(UnsatisfiedImport, match=r"imports `env::f`"):
        engine.load(module, name="mod.wasm")


def test_nothing_to_run_is_an_error(engine: Engine) -> None:
    with pytest.raises(NoEntryPoint, match="component exports no wasi:cli/run"):
        engine.load(wasmtime.wat2wasm("(component (core module $m))"), name="lib.wasm")
    with pytest.raises(NoEntryPoint, match="module exports no _start"):
        engine.load(wasmtime.wat2wasm("(module)"), name="lib.wasm")


def test_a_wasi_http_proxy_is_refused_before_any_compile(engine: Engine) -> None:
    from services import proxy_components

    began = time.perf_counter()
    with pytest.raises(NoEntryPoint, match=r"fixed\.wasm: a wasi:http proxy component .* serve it with `wasm-oci serve`"):
        engine.load(proxy_components.fixed().read_bytes(), name="fixed.wasm")
    assert time.perf_counter() - began < 0.5
