"""Guest limits that hold whatever the guest does: a deadline or a kill ends a guest blocked
in a clock wait or a stdin read (its thread ends with it), the memory limit covers all its
memories together, and tables and instance counts are bounded. Real guests throughout; every
wait has a deadline."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import wasmtime

from services.shim import module, sleeper
from wasm_oci.engine import Engine, Execution, RunResult, RunSpec, memory

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HELLO = (EXAMPLES / "hello" / "hello.wasm").read_bytes()
HTTP = (EXAMPLES / "http" / "http.wasm").read_bytes()
CLI = Path(sys.executable).with_name("wasm-oci")
STARTUP = 2.0
"""Seconds a `wasm-oci run` may take besides its guest (interpreter, imports, compile) on a busy CI machine."""

_READ = '(import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))'
_POLL = '(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))'
_NOW = '(import "wasi_snapshot_preview1" "clock_time_get" (func $now (param i32 i64 i32) (result i32)))'
# Reads stdin once and exits with the number of bytes read (0 at end-of-file).
READ_ONCE = module(
    f'{_READ} (memory (export "memory") 1)'
    ' (func (export "_start") (i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 100))'
    "  (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))"
    "  (call $exit (i32.load (i32.const 8))))"
)


def clock_poll(subscriptions: list[tuple[int, int, int, str]], prelude: str = "") -> bytes:
    """A module polling clock subscriptions (userdata, clock id, flags, timeout as a WAT i64
    expression); exits with 10 * the events written + the first event's userdata."""
    stores = "".join(
        f" (i64.store (i32.const {1024 + 48 * i}) (i64.const {userdata}))"
        f" (i32.store (i32.const {1024 + 48 * i + 16}) (i32.const {clock}))"
        f" (i64.store (i32.const {1024 + 48 * i + 24}) {timeout})"
        f" (i32.store16 (i32.const {1024 + 48 * i + 40}) (i32.const {flags}))"
        for i, (userdata, clock, flags, timeout) in enumerate(subscriptions)
    )
    return module(
        f'{_POLL} {_NOW} (memory (export "memory") 1)'
        f' (func (export "_start") {prelude}{stores}'
        f"  (if (call $poll (i32.const 1024) (i32.const 4096) (i32.const {len(subscriptions)}) (i32.const 8)) (then unreachable))"
        "  (call $exit (i32.add (i32.mul (i32.load (i32.const 8)) (i32.const 10)) (i32.wrap_i64 (i64.load (i32.const 4096))))))"
    )


def component(body: str) -> bytes:
    """A wasi:cli command component whose run is the core `body` (an i32 left last: 0 for ok),
    which calls $sleep (subscribe-duration), $ready, $block, $poll (pollables at 0, the result
    at 8; lists are allocated from 1024), $drop, $stdin, $subscribe (stdin's) and $drop_stream."""
    return bytes(
        wasmtime.wat2wasm(f"""(component
  (import "wasi:io/poll@0.2.0" (instance $poll
    (export "pollable" (type (sub resource)))
    (export "[method]pollable.ready" (func (param "self" (borrow 0)) (result bool)))
    (export "[method]pollable.block" (func (param "self" (borrow 0))))
    (export "poll" (func (param "in" (list (borrow 0))) (result (list u32))))))
  (alias export $poll "pollable" (type $pollable))
  (import "wasi:clocks/monotonic-clock@0.2.0" (instance $clock
    (alias outer 1 $pollable (type)) (export "pollable" (type (eq 0)))
    (export "subscribe-duration" (func (param "when" u64) (result (own 1))))))
  (import "wasi:io/streams@0.2.0" (instance $streams
    (alias outer 1 $pollable (type)) (export "pollable" (type (eq 0)))
    (export "input-stream" (type (sub resource)))
    (export "[method]input-stream.subscribe" (func (param "self" (borrow 2)) (result (own 1))))))
  (alias export $streams "input-stream" (type $input))
  (import "wasi:cli/stdin@0.2.0" (instance $stdin
    (alias outer 1 $input (type)) (export "input-stream" (type (eq 0)))
    (export "get-stdin" (func (result (own 1))))))
  (core module $heap
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (global.get $next) (global.set $next (i32.add (global.get $next) (local.get 3)))))
  (core instance $heap (instantiate $heap))
  (alias core export $heap "memory" (core memory $memory))
  (alias core export $heap "realloc" (core func $realloc))
  (core func $ready (canon lower (func $poll "[method]pollable.ready")))
  (core func $block (canon lower (func $poll "[method]pollable.block")))
  (core func $poll (canon lower (func $poll "poll") (memory $memory) (realloc $realloc)))
  (core func $sleep (canon lower (func $clock "subscribe-duration")))
  (core func $drop (canon resource.drop $pollable))
  (core func $stdin (canon lower (func $stdin "get-stdin")))
  (core func $subscribe (canon lower (func $streams "[method]input-stream.subscribe")))
  (core func $drop_stream (canon resource.drop $input))
  (core module $main
    (import "" "memory" (memory 1))
    (import "" "ready" (func $ready (param i32) (result i32)))
    (import "" "block" (func $block (param i32)))
    (import "" "poll" (func $poll (param i32 i32 i32)))
    (import "" "sleep" (func $sleep (param i64) (result i32)))
    (import "" "drop" (func $drop (param i32)))
    (import "" "stdin" (func $stdin (result i32)))
    (import "" "subscribe" (func $subscribe (param i32) (result i32)))
    (import "" "drop-stream" (func $drop_stream (param i32)))
    (func (export "run") (result i32) (local $long i32) (local $short i32) (local $stream i32) {body}))
  (core instance $main (instantiate $main (with "" (instance
    (export "memory" (memory $memory)) (export "ready" (func $ready)) (export "block" (func $block))
    (export "poll" (func $poll)) (export "sleep" (func $sleep)) (export "drop" (func $drop))
    (export "stdin" (func $stdin)) (export "subscribe" (func $subscribe)) (export "drop-stream" (func $drop_stream))))))
  (func $run (result (result)) (canon lift (core func $main "run")))
  (instance $cli (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli)))""")
    )


# Components sleeping 30 s in pollable.block, and in poll.
COMPONENT_SLEEPER = component("(call $block (call $sleep (i64.const 30000000000))) (i32.const 0)")
COMPONENT_POLLER = component(
    "(i32.store (i32.const 0) (call $sleep (i64.const 30000000000))) (call $poll (i32.const 0) (i32.const 1) (i32.const 8)) (i32.const 0)"
)
# Waits as WASI says, or traps: a poll of a 30 s and a 50 ms clock answers the second, which is
# then ready and the first not; a block on a 20 ms clock; a stream's pollable dropped before it.
COMPONENT_WAITER = component("""
  (local.set $long (call $sleep (i64.const 30000000000)))
  (local.set $short (call $sleep (i64.const 50000000)))
  (i32.store (i32.const 0) (local.get $long))
  (i32.store (i32.const 4) (local.get $short))
  (call $poll (i32.const 0) (i32.const 2) (i32.const 8))
  (if (i32.ne (i32.load (i32.const 12)) (i32.const 1)) (then unreachable))
  (if (i32.ne (i32.load (i32.load (i32.const 8))) (i32.const 1)) (then unreachable))
  (if (i32.eqz (call $ready (local.get $short))) (then unreachable))
  (if (call $ready (local.get $long)) (then unreachable))
  (call $drop (local.get $long))
  (call $drop (local.get $short))
  (local.set $short (call $sleep (i64.const 20000000)))
  (call $block (local.get $short))
  (if (i32.eqz (call $ready (local.get $short))) (then unreachable))
  (call $drop (local.get $short))
  (local.set $stream (call $stdin))
  (call $drop (call $subscribe (local.get $stream)))
  (call $drop_stream (local.get $stream))
  (i32.const 0)""")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(cache_dir=tmp_path_factory.mktemp("compiled"))


def on_a_thread(execution: Execution) -> threading.Thread:
    thread = threading.Thread(target=execution.run, daemon=True)
    thread.start()
    return thread


def ended(thread: threading.Thread, execution: Execution, within: float) -> RunResult:
    """The run's result once its thread has ended, which must happen `within` seconds."""
    thread.join(within)
    assert not thread.is_alive(), "the guest's thread is still in its host call"
    assert execution.result is not None
    return execution.result


def cli(wasm: Path, *options: str, stdin: int | None = None) -> tuple[subprocess.CompletedProcess[bytes], float]:
    began = time.monotonic()
    done = subprocess.run([str(CLI), "run", *options, str(wasm)], stdin=stdin, capture_output=True, timeout=30)
    return done, time.monotonic() - began


# -- clock waits -------------------------------------------------------------------------------


def test_a_module_sleeping_in_poll_oneoff_times_out_at_its_deadline_and_its_thread_ends(engine: Engine) -> None:
    execution = engine.execution(engine.load(sleeper(30, 0), name="sleeper.wasm"), RunSpec(timeout=0.5))
    thread = on_a_thread(execution)
    result = ended(thread, execution, 0.5 + 1)
    assert (result.status, result.reason) == (124, "timeout")
    assert 0.45 < result.elapsed < 1.0


def test_a_kill_ends_a_module_sleeping_in_poll_oneoff(engine: Engine) -> None:
    execution = engine.execution(engine.load(sleeper(30, 0), name="sleeper.wasm"), RunSpec())
    thread = on_a_thread(execution)
    time.sleep(0.1)
    began = time.monotonic()
    execution.kill()
    assert ended(thread, execution, 1).status == 137
    assert time.monotonic() - began < 0.5


@pytest.mark.parametrize("wasm", [COMPONENT_SLEEPER, COMPONENT_POLLER], ids=["block", "poll"])
def test_a_component_sleeping_times_out_at_its_deadline_and_its_thread_ends(engine: Engine, wasm: bytes) -> None:
    execution = engine.execution(engine.load(wasm, name="sleeper.wasm"), RunSpec(timeout=0.5))
    thread = on_a_thread(execution)
    result = ended(thread, execution, 0.5 + 1)
    assert (result.status, result.reason) == (124, "timeout")
    assert 0.45 < result.elapsed < 1.0


@pytest.mark.parametrize("wasm", [COMPONENT_SLEEPER, COMPONENT_POLLER], ids=["block", "poll"])
def test_a_kill_ends_a_sleeping_component(engine: Engine, wasm: bytes) -> None:
    execution = engine.execution(engine.load(wasm, name="sleeper.wasm"), RunSpec())
    thread = on_a_thread(execution)
    time.sleep(0.1)
    began = time.monotonic()
    execution.kill()
    assert ended(thread, execution, 1).status == 137
    took = time.monotonic() - began
    print(f"the kill ended the sleeping component in {took * 1e3:.1f} ms")
    assert took < 0.2


def test_component_waits_wait_and_report_as_wasi_says(engine: Engine) -> None:
    result = engine.run(engine.load(COMPONENT_WAITER, name="waiter.wasm"), RunSpec(timeout=10))
    assert (result.status, result.reason) == (0, "exit"), result
    assert 0.07 <= result.elapsed < 1


@pytest.mark.parametrize(
    ("subscriptions", "prelude", "expected", "least"),
    [
        ([(7, 1, 0, "(i64.const 100000000)")], "", 17, 0.1),
        ([(3, 1, 0, "(i64.const 50000000)"), (4, 0, 0, "(i64.const 30000000000)")], "", 13, 0.05),
        (
            [(5, 1, 1, "(i64.add (i64.load (i32.const 16)) (i64.const 100000000))")],
            "(drop (call $now (i32.const 1) (i64.const 1) (i32.const 16)))",
            15,
            0.1,
        ),
        (
            [(6, 0, 1, "(i64.add (i64.load (i32.const 16)) (i64.const 100000000))")],
            "(drop (call $now (i32.const 0) (i64.const 1) (i32.const 16)))",
            16,
            0.1,
        ),
        ([(2, 1, 0, "(i64.const 0)"), (9, 1, 0, "(i64.const 0)")], "", 22, 0.0),
    ],
    ids=["relative", "earliest-of-two", "absolute-monotonic", "absolute-realtime", "both-due"],
)
def test_clock_polls_wait_and_report_as_wasi_says(
    engine: Engine, subscriptions: list[tuple[int, int, int, str]], prelude: str, expected: int, least: float
) -> None:
    result = engine.run(engine.load(clock_poll(subscriptions, prelude), name="poll.wasm"), RunSpec(timeout=10))
    assert result.status == expected, result
    assert least <= result.elapsed < least + 1


def test_a_poll_on_stdin_goes_to_wasmtime_and_a_stop_ends_it(engine: Engine, tmp_path: Path) -> None:
    """An fd subscription is Wasmtime's own poll_oneoff; the stop's close of stdin wakes it."""
    fifo = tmp_path / "in"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # a writer that never writes
    try:
        wasm = module(
            f'{_POLL} (memory (export "memory") 1) (func (export "_start")'
            " (i32.store8 (i32.const 8) (i32.const 1))"  # tag: fd_read, on fd 0
            " (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))"
            " (call $exit (i32.load (i32.const 128))))"
        )
        execution = engine.execution(engine.load(wasm, name="poll-stdin.wasm"), RunSpec(stdin=fifo, timeout=0.3))
        thread = on_a_thread(execution)
        assert ended(thread, execution, 0.3 + 1).status == 124
        os.write(writer, b"x")
        ready = engine.run(engine.load(wasm, name="poll-stdin.wasm"), RunSpec(stdin=fifo, timeout=5))
        assert (ready.status, ready.reason) == (1, "exit"), "one event: stdin is readable"
    finally:
        os.close(writer)


def test_cli_timeout_ends_a_sleeping_module_with_124(tmp_path: Path) -> None:
    (tmp_path / "sleeper.wasm").write_bytes(sleeper(20, 0))
    done, took = cli(tmp_path / "sleeper.wasm", "--timeout", "1")
    assert done.returncode == 124
    assert done.stderr.decode().splitlines()[-1].startswith("wasm-oci: timeout: timed out after 1.0")
    assert took < 1 + STARTUP, took


def test_cli_timeout_ends_a_sleeping_component_with_124(tmp_path: Path) -> None:
    """A component's wait ends at the end of its current slice (polls.py: they double from
    20 ms), within the CLI's one-second grace."""
    (tmp_path / "sleeper.wasm").write_bytes(COMPONENT_SLEEPER)
    done, took = cli(tmp_path / "sleeper.wasm", "--timeout", "1")
    assert done.returncode == 124
    assert done.stderr.decode().splitlines()[-1].startswith("wasm-oci: timeout: timed out after 1.")
    assert took < 1 + 1 + STARTUP, took


# -- stdin ---------------------------------------------------------------------------------------


def test_cli_timeout_ends_a_guest_blocked_reading_stdin(tmp_path: Path) -> None:
    (tmp_path / "read.wasm").write_bytes(READ_ONCE)
    read_end, write_end = os.pipe()
    try:
        done, took = cli(tmp_path / "read.wasm", "--timeout", "1", stdin=read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert done.returncode == 124
    assert done.stderr.decode().splitlines()[-1].startswith("wasm-oci: timeout: timed out after 1.0")
    assert took < 1 + STARTUP, took


def test_cli_stdin_from_a_pipe_a_file_and_dev_null(tmp_path: Path) -> None:
    (tmp_path / "read.wasm").write_bytes(READ_ONCE)
    (tmp_path / "in").write_bytes(b"four")
    piped = subprocess.run([str(CLI), "run", str(tmp_path / "read.wasm")], input=b"abc", capture_output=True, timeout=30)
    with open(tmp_path / "in", "rb") as file, open(os.devnull, "rb") as null:
        from_file, _ = cli(tmp_path / "read.wasm", stdin=file.fileno())
        from_null, _ = cli(tmp_path / "read.wasm", stdin=null.fileno())
    assert (piped.returncode, from_file.returncode, from_null.returncode) == (3, 4, 0)


@pytest.fixture
def fifo_writer(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A stdin FIFO and a write end held open (as a client attached to it)."""
    fifo = tmp_path / "stdin"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)
    try:
        yield fifo, writer
    finally:
        os.close(writer)


def test_a_kill_ends_a_guest_blocked_reading_a_fifo_stdin(engine: Engine, fifo_writer: tuple[Path, int]) -> None:
    fifo, _ = fifo_writer
    execution = engine.execution(engine.load(READ_ONCE, name="read.wasm"), RunSpec(stdin=fifo))
    execution.prepare()
    thread = on_a_thread(execution)
    time.sleep(0.1)
    assert thread.is_alive()
    began = time.monotonic()
    execution.kill()
    assert ended(thread, execution, 1).status == 137
    assert time.monotonic() - began < 0.5


def test_a_fifo_stdin_delivers_its_bytes_and_its_end_of_file(engine: Engine, tmp_path: Path) -> None:
    """Through the relay: what the client writes (more than a pipe holds, so the relay waits
    for the guest), then its close as end-of-file; a FIFO nobody writes at the start is empty."""
    fifo, out = tmp_path / "stdin", tmp_path / "out"
    os.mkfifo(fifo)
    body = bytes(range(97, 123)) * 40_000  # ~1 MiB of a-z

    def feed() -> None:
        with open(fifo, "wb") as pipe:
            pipe.write(body)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    execution = engine.execution(engine.load(HTTP, name="http.wasm"), RunSpec(args=["http.wasm"], stdin=fifo, stdout=out, timeout=20))
    result = ended(on_a_thread(execution), execution, 20)
    feeder.join(5)
    assert result.status == 0
    assert out.read_bytes().split(b"\n\n", 1)[1] == body.upper()
    unwritten = engine.run(engine.load(READ_ONCE, name="read.wasm"), RunSpec(stdin=fifo, timeout=5))
    assert (unwritten.status, unwritten.reason) == (0, "exit")


# -- memory, tables, counts ----------------------------------------------------------------------

SIXTEEN_MEMORIES = wasmtime.wat2wasm(
    "(module "
    + " ".join(f"(memory $m{i} 1)" for i in range(16))
    + ' (func (export "_start") (loop $more '
    + " ".join(f"(if (i32.eq (memory.grow $m{i} (i32.const 16)) (i32.const -1)) (then unreachable))" for i in range(16))
    + " (br $more))))"
)


def test_sixteen_memories_share_one_memory_limit(engine: Engine) -> None:
    """Each grows 1 MiB in turn: together they stop at the limit, not at 16 times it."""
    limit = 64 << 20
    execution = engine.execution(engine.load(SIXTEEN_MEMORIES, name="memories.wasm"), RunSpec(memory_limit=limit, timeout=10))
    result = execution.run()
    assert (result.status, result.reason) == (137, "oom")
    assert limit - (1 << 20) < execution.memory.peak <= limit
    assert memory.live_memories() == 0


@pytest.mark.parametrize(
    ("wat", "limit", "names"),
    [
        ("(table 200000 funcref)", 64 << 20, "131072 elements"),
        ("(table 2000000 funcref)", None, "1048576 elements"),
        (" ".join("(table 1 funcref)" for _ in range(65)), None, "64 tables"),
    ],
    ids=["table-past-its-memory-limit-share", "table-past-the-default", "too-many-tables"],
)
def test_tables_past_the_limits_are_refused(engine: Engine, wat: str, limit: int | None, names: str) -> None:
    wasm = wasmtime.wat2wasm(f'(module {wat} (func (export "_start")))')
    result = engine.run(engine.load(wasm, name="tables.wasm"), RunSpec(memory_limit=limit))
    assert (result.status, result.reason) == (134, "trap")
    assert result.message is not None and result.message.startswith("resource limit exceeded: ")
    assert names in result.message, result.message


def test_a_table_grow_past_the_limit_is_refused_to_the_guest(engine: Engine) -> None:
    wasm = module(
        '(table 1 funcref) (memory (export "memory") 1) (func (export "_start")'
        " (call $exit (i32.eq (table.grow 0 (ref.null func) (i32.const 1048576)) (i32.const -1))))"
    )
    assert engine.run(engine.load(wasm, name="grow.wasm"), RunSpec()).status == 1


@pytest.mark.parametrize("wasm", [HELLO, HTTP], ids=["hello", "http"])
@pytest.mark.parametrize("limit", [None, 16 << 20], ids=["no-memory-limit", "16M"])
def test_the_examples_run_under_the_default_limits(engine: Engine, tmp_path: Path, wasm: bytes, limit: int | None) -> None:
    result = engine.run(
        engine.load(wasm, name="example.wasm"), RunSpec(args=["example.wasm"], stdin=b"body", stdout=tmp_path / "out", memory_limit=limit)
    )
    assert (result.status, result.reason) == (0, "exit")
    assert (tmp_path / "out").read_bytes()
