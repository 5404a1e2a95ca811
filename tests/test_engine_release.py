"""The engine lets go of everything a run held the moment the run ends, whatever the ending,
with the garbage collector switched off: a descriptor left for it to close is a FIFO whose
reader (containerd's CRI) never sees end-of-file."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import wasmtime

from services.shim import module
from wasm_oci.engine import Engine, Preopen, RunSpec, memory
from wasm_oci.errors import NotFound

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HELLO = (EXAMPLES / "hello" / "hello.wasm").read_bytes()
SPIN = (EXAMPLES / "spin" / "spin.wasm").read_bytes()
TRAP = wasmtime.wat2wasm('(module (func (export "_start") unreachable))')
GROW = wasmtime.wat2wasm("""(module (memory 1) (func (export "_start")
  (loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable))""")
TOO_BIG = wasmtime.wat2wasm('(module (memory 300) (func (export "_start")))')
# Writes 64 KiB to stdout, then to stderr, again and again: once a reader stops reading, it is
# blocked in a host call a stop cannot end (a write to a full FIFO; clock waits and stdin reads
# do end, see test_engine_limits).
BLOCKED_WRITER = module(
    '(memory (export "memory") 2) (func (export "_start")'
    " (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 65536))"
    " (loop $more (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))"
    "  (drop (call $write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8))) (br $more)))"
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(cache_dir=tmp_path_factory.mktemp("compiled"))


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def open_under(directory: Path) -> list[str]:
    """What this process has open below `directory`."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            found.append(target)
    return found


def released(directory: Path) -> bool:
    """Nothing below `directory` is open. The outputs and preopens must be closed already;
    a stdin file is read by a reader thread of Wasmtime's that closes it when its current
    read returns, so it gets a moment (a FIFO stdin a client keeps open is let go when the
    client closes it: nobody waits for its end-of-file)."""
    assert [path for path in open_under(directory) if not path.endswith("/in")] == []
    deadline = time.monotonic() + 2
    while open_under(directory) and time.monotonic() < deadline:
        time.sleep(0.005)
    return open_under(directory) == []


def spec(tmp_path: Path, **extra: object) -> RunSpec:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (tmp_path / "in").write_bytes(b"input")
    return RunSpec(
        args=["guest.wasm"],
        stdin=tmp_path / "in",
        stdout=tmp_path / "out",
        stderr=tmp_path / "err",
        preopens=[Preopen(data, "/data")],
        **extra,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("wasm", "extra", "status"),
    [
        (HELLO, {}, 0),
        (HELLO, {"env": {"EXIT_CODE": "3"}}, 1),
        (TRAP, {}, 134),
        (GROW, {"memory_limit": 4 << 20}, 137),
        (TOO_BIG, {"memory_limit": 1 << 20}, 137),
        (SPIN, {"timeout": 0.05}, 124),
    ],
    ids=["exit-0", "exit-1", "trap", "memory-limit", "failed-instantiation", "timeout"],
)
def test_every_ending_closes_what_the_run_held(
    engine: Engine, tmp_path: Path, no_gc: None, wasm: bytes, extra: dict[str, object], status: int
) -> None:
    program = engine.load(wasm, name="guest.wasm")
    execution = engine.execution(program, spec(tmp_path, **extra))
    execution.prepare()
    assert open_under(tmp_path), "the prepared run holds its stdio and preopen"
    assert execution.run().status == status
    assert released(tmp_path)
    assert memory.live_memories() == 0, "every linear memory was unmapped with its store"


def test_a_kill_and_a_discard_close_what_the_run_held(engine: Engine, tmp_path: Path, no_gc: None) -> None:
    program = engine.load(SPIN, name="spin.wasm")
    killed = engine.execution(program, spec(tmp_path))
    killed.start()
    time.sleep(0.02)
    killed.kill()
    result = killed.wait(5)
    assert result is not None and result.status == 137
    assert released(tmp_path)
    discarded = engine.execution(program, spec(tmp_path))
    discarded.prepare()
    discarded.discard()
    assert released(tmp_path)


def test_a_setup_that_fails_half_way_closes_what_it_opened(engine: Engine, tmp_path: Path, no_gc: None) -> None:
    program = engine.load(HELLO, name="hello.wasm")
    broken = RunSpec(stdout=tmp_path / "out", stderr=tmp_path / "err", preopens=[Preopen(tmp_path / "missing", "/m")])
    with pytest.raises(NotFound):
        engine.execution(program, broken).prepare()
    assert released(tmp_path)


def test_a_guest_blocked_in_a_host_call_lets_go_of_its_fifos_on_request(engine: Engine, tmp_path: Path) -> None:
    """What the shim does after a kill the guest cannot see yet: the stdout FIFO's reader gets
    EOF while the guest is still blocked writing to a stderr nobody reads. Once that write
    returns, the stop ends the guest."""
    out, err = tmp_path / "out.fifo", tmp_path / "err.fifo"
    os.mkfifo(out)
    os.mkfifo(err)
    eof = threading.Event()

    def read_to_eof() -> None:
        with open(out, "rb") as pipe:
            pipe.read()
        eof.set()

    reader = threading.Thread(target=read_to_eof, daemon=True)
    reader.start()
    unread = os.open(err, os.O_RDONLY | os.O_NONBLOCK)  # a reader that does not read
    try:
        execution = engine.execution(engine.load(BLOCKED_WRITER, name="writer.wasm"), RunSpec(stdout=out, stderr=err))
        execution.start()
        time.sleep(0.2)
        execution.kill()
        assert execution.wait(0.2) is None, "the guest is still in its host call"
        assert not eof.is_set()
        assert execution.release_stdio() == 2
        assert eof.wait(2), "the reader saw no end-of-file"
        assert execution.wait(0) is None, "the guest's call has not returned"
        deadline = time.monotonic() + 5
        while execution.wait(0.01) is None and time.monotonic() < deadline:
            with contextlib.suppress(BlockingIOError):
                os.read(unread, 1 << 16)
    finally:
        os.close(unread)
    result = execution.wait(0)
    assert result is not None, "the guest's write returned, and the stop ended it"
    assert result.status == 137
    assert released(tmp_path)
