"""wasi:io (error, poll, streams), wasi:clocks/monotonic-clock and wasi:cli stdio, hosted in Python.

A proxy component's request and response bodies are wasi:io streams the host must make and
read itself, and Wasmtime's C API cannot mint its own `input-stream` or `output-stream` for
the host. So the proxy host defines these interfaces whole, with its own resources: every
interface whose functions take or return a stream or a pollable has to be ours (the clock's
`subscribe-*`, the stdio getters), because a resource type cannot be half Wasmtime's.

Each request has a Context: its resources (a table of reps), and one event that every change
a guest may wait for sets (bytes into or out of a pipe, an outgoing response arriving, the
host stopping the guest). A guest's wait (`poll`, `block`, a blocking read or write) sleeps
on that event until what it waits for is ready or its deadline passes; a stop ends the wait
at once and traps the guest (HostError), so no wait outlives a timeout or a kill.

Bodies move through Pipes: bytes between a writer and a reader, one of them the guest.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar, cast

from wasmtime.component import Variant

from wasm_oci.engine.proxy.values import HostError

T = TypeVar("T")

MAX_RESOURCES = 100_000
"""Resources one request may hold at once (a guest leaking handles traps past it)."""
WRITE_PERMIT = 64 * 1024
"""What `check-write` allows at once on a stream that has room (a guest writes at most this in one call)."""
MAX_READ = 1024 * 1024
"""The most one read hands the guest, whatever length it asks for."""


class Context:
    """One request's resources and waits (see the module docstring)."""

    def __init__(self) -> None:
        self.items: dict[int, object] = {}
        self._reps = itertools.count(1)
        self.changed = threading.Event()
        self.stopped = threading.Event()
        self.stdout: Console | None = None
        self.stderr: Console | None = None
        self.failure: BaseException | None = None
        """An exception a host function raised that is not HostError (a bug of ours): it trapped the guest."""

    def add(self, item: object) -> int:
        if len(self.items) >= MAX_RESOURCES:
            raise HostError(f"the guest holds {MAX_RESOURCES} resources")
        rep = next(self._reps)
        self.items[rep] = item
        return rep

    def get(self, rep: int, kind: type[T]) -> T:
        item = self.items.get(rep)
        if not isinstance(item, kind):
            raise HostError(f"no {kind.__name__} {rep}")
        return item

    def take(self, rep: int, kind: type[T]) -> T:
        """An own handle the guest handed over (the host now holds it)."""
        item = self.get(rep, kind)
        del self.items[rep]
        return item

    def drop(self, rep: int) -> None:
        """The guest dropped its handle."""
        item = self.items.pop(rep, None)
        dropped = getattr(item, "dropped", None)
        if dropped is not None:
            dropped()

    def notify(self) -> None:
        self.changed.set()

    def stop(self) -> None:
        """End every wait of the guest now and trap it at its next one."""
        self.stopped.set()
        self.changed.set()

    def wait(self, ready: Callable[[], bool], deadline: float | None = None) -> None:
        """Return once `ready()` (or `time.monotonic()` reaches `deadline`); HostError if stopped first."""
        while True:
            self.changed.clear()
            if self.stopped.is_set():
                raise HostError("guest stopped by the host")
            if ready():
                return
            if deadline is None:
                self.changed.wait()
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.changed.wait(left)

    def failed(self, error: BaseException) -> None:
        self.failure = self.failure or error


_current = threading.local()


def current() -> Context:
    context = current_or_none()
    if context is None:
        raise HostError("no request is being handled on this thread")
    return context


def current_or_none() -> Context | None:
    context = getattr(_current, "context", None)
    return context if isinstance(context, Context) else None


def use(context: Context | None) -> None:
    """The guest this thread runs from now belongs to `context` (None: none)."""
    _current.context = context


class IoError:
    """A wasi:io `error`: a message, and the wasi:http error-code it stands for, if any."""

    def __init__(self, message: str, http_code: Variant | None = None) -> None:
        self.message, self.http_code = message, http_code


class Pollable:
    def __init__(self, ready: Callable[[], bool], deadline: float | None = None) -> None:
        self.ready, self.deadline = ready, deadline


def timer(deadline: float) -> Pollable:
    return Pollable(lambda: time.monotonic() >= deadline, deadline)


class Pipe:
    """Bytes from a writer to a reader across threads (one end is usually the guest).

    window: the most bytes held unread before the writer is told to wait (None: no such
    bound: the reader collects everything at the end). limit: the most bytes in all; a write
    past it fails. The writer ends the stream with `finish()` (or `finish(error)`); the reader
    may `abandon()` it, and writes fail from then on.
    """

    def __init__(self, context: Context, window: int | None = None, limit: int | None = None) -> None:
        self.context = context
        self.window, self.limit = window, limit
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.total = 0
        self.finished = False
        self.error: IoError | None = None
        self.abandoned = False
        self.over_limit = False
        self.cond = threading.Condition()

    def _changed(self) -> None:
        self.cond.notify_all()
        self.context.notify()

    # The writer's side.
    def space(self) -> int:
        if self.window is None:
            return WRITE_PERMIT
        return max(0, min(WRITE_PERMIT, self.window - self.buffered))

    def writable(self) -> bool:
        return self.abandoned or self.finished or self.space() > 0

    def put(self, data: bytes) -> bool:
        """Queue `data`; False when the reader is gone or the limit is passed (nothing queued)."""
        with self.cond:
            if self.abandoned or self.finished:
                return False
            if self.limit is not None and self.total + len(data) > self.limit:
                self.over_limit = True
                return False
            if data:
                self.chunks.append(bytes(data))
                self.buffered += len(data)
                self.total += len(data)
                self._changed()
            return True

    def put_waiting(self, data: bytes, timeout: float | None = None) -> bool:
        """For a host thread: queue `data` once the window has room (False: the reader went, or `timeout` passed)."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.abandoned or self.window is None or self.buffered < self.window, timeout):
                return False
        return self.put(data)

    def finish(self, error: IoError | None = None) -> None:
        with self.cond:
            if self.finished:
                return
            self.finished, self.error = True, error
            self._changed()

    # The reader's side.
    def readable(self) -> bool:
        return self.buffered > 0 or self.finished

    def take(self, size: int) -> bytes:
        """Up to `size` queued bytes now (b"" when none are)."""
        with self.cond:
            if not self.chunks or size <= 0:
                return b""
            out: list[bytes] = []
            wanted = size
            while self.chunks and wanted > 0:
                chunk = self.chunks.popleft()
                if len(chunk) > wanted:
                    self.chunks.appendleft(chunk[wanted:])
                    chunk = chunk[:wanted]
                out.append(chunk)
                wanted -= len(chunk)
            taken = b"".join(out)
            self.buffered -= len(taken)
            self._changed()
            return taken

    def drain(self) -> bytes:
        return self.take(self.buffered)

    def take_waiting(self, size: int, timeout: float | None = None) -> bytes | None:
        """For a host thread: the next bytes once there are some; b"" at the end; None if `timeout` passed first."""
        with self.cond:
            if not self.cond.wait_for(self.readable, timeout):
                return None
        return self.take(size)

    def at_end(self) -> bool:
        return self.finished and self.buffered == 0

    def abandon(self) -> None:
        with self.cond:
            self.abandoned = True
            self.chunks.clear()
            self.buffered = 0
            self._changed()


class Console:
    """The guest's stdout or stderr: bytes to `write` (None: discarded), at most `limit` in all."""

    def __init__(self, write: Callable[[bytes], object] | None, limit: int) -> None:
        self.write, self.limit, self.total = write, limit, 0

    def put(self, data: bytes) -> bool:
        kept = data[: max(0, self.limit - self.total)]
        self.total += len(data)
        if kept and self.write is not None:
            self.write(kept)
        return True


class InputStream:
    """The guest's end of a pipe it reads. `pull(size)` (for a body the host reads on demand)
    is called when nothing is queued: it blocks for the next bytes, b"" at the end."""

    def __init__(self, pipe: Pipe, pull: Callable[[int], bytes] | None = None) -> None:
        self.pipe, self.pull = pipe, pull

    def ready(self) -> bool:
        return self.pull is not None or self.pipe.readable()

    def read(self, size: int) -> bytes | Variant:
        """Bytes (maybe none), or the stream-error to answer."""
        size = min(size, MAX_READ)
        data = self.pipe.take(size)
        if data or size == 0:
            return data
        if self.pipe.at_end():
            return self._ended()
        if self.pull is not None:
            try:
                data = self.pull(size)
            except OSError as exc:
                self.pipe.finish(IoError(f"reading the body: {exc}"))
                return self._ended()
            if not data:
                self.pipe.finish()
                return self._ended()
        return data

    def _ended(self) -> Variant:
        error = self.pipe.error
        if error is None:
            return Variant("closed")
        return Variant("last-operation-failed", current().add(error))


class OutputStream:
    """The guest's end of a pipe (or console) it writes."""

    def __init__(self, sink: Pipe | Console) -> None:
        self.sink = sink

    def ready(self) -> bool:
        return not isinstance(self.sink, Pipe) or self.sink.writable()

    def check(self) -> int | Variant:
        sink = self.sink
        if isinstance(sink, Console):
            return WRITE_PERMIT
        if sink.abandoned or sink.finished:
            return Variant("closed")
        if sink.over_limit:
            return _failed("the body passed its size limit")
        return sink.space()

    def write(self, data: bytes) -> Variant | None:
        if not self.sink.put(data):
            return _failed("the body passed its size limit") if isinstance(self.sink, Pipe) and self.sink.over_limit else Variant("closed")
        return None


def _failed(message: str) -> Variant:
    return Variant("last-operation-failed", current().add(IoError(message)))


def _ok(value: Any = None) -> Variant:
    return Variant("ok", value)


def _result(value: Any) -> Variant:
    """A stream operation's outcome as result<T, stream-error>: a Variant from the stream is the error."""
    return Variant("err", value) if isinstance(value, Variant) else _ok(value)


# wasi:io/poll


def _poll(rep_list: list[int]) -> list[int]:
    context = current()
    if not rep_list:
        raise HostError("poll of an empty list")
    pollables = [context.get(rep, Pollable) for rep in rep_list]
    deadlines = [p.deadline for p in pollables if p.deadline is not None]
    found: list[int] = []

    def ready() -> bool:
        found[:] = [index for index, p in enumerate(pollables) if p.ready()]
        return bool(found)

    while not found:
        context.wait(ready, min(deadlines) if deadlines else None)
    return found


def _block(rep: int) -> None:
    _poll([rep])


# wasi:io/streams


def _read(rep: int, size: int, blocking: bool) -> Variant:
    context = current()
    stream = context.get(rep, InputStream)
    if blocking and size > 0:
        context.wait(stream.ready)
    return _result(stream.read(size))


def _skip(rep: int, size: int, blocking: bool) -> Variant:
    outcome = _read(rep, size, blocking)
    return _ok(len(cast(bytes, outcome.payload))) if outcome.tag == "ok" else outcome


def _check_write(rep: int) -> Variant:
    return _result(current().get(rep, OutputStream).check())


def _write(rep: int, data: bytes) -> Variant:
    stream = current().get(rep, OutputStream)
    return _result(stream.write(data))


def _blocking_write(rep: int, data: bytes) -> Variant:
    context = current()
    stream = context.get(rep, OutputStream)
    view = memoryview(data)
    while True:
        context.wait(stream.ready)
        permit = stream.check()
        if isinstance(permit, Variant):
            return Variant("err", permit)
        part = bytes(view[: permit or len(view)]) if isinstance(stream.sink, Console) else bytes(view[:permit])
        failed = stream.write(part)
        if failed is not None:
            return Variant("err", failed)
        view = view[len(part) :]
        if not view:
            return _ok()


def _flush(rep: int) -> Variant:
    permit = current().get(rep, OutputStream).check()
    return Variant("err", permit) if isinstance(permit, Variant) else _ok()


def _splice(rep: int, source: int, size: int, blocking: bool) -> Variant:
    context = current()
    stream = context.get(rep, OutputStream)
    if blocking:
        context.wait(stream.ready)
    permit = stream.check()
    if isinstance(permit, Variant):
        return Variant("err", permit)
    outcome = _read(source, min(size, permit), blocking)
    if outcome.tag != "ok":
        return outcome
    data = cast(bytes, outcome.payload)
    failed = stream.write(data)
    return Variant("err", failed) if failed is not None else _ok(len(data))


def _subscribe_input(rep: int) -> int:
    context = current()
    stream = context.get(rep, InputStream)
    return context.add(Pollable(stream.ready))


def _subscribe_output(rep: int) -> int:
    context = current()
    stream = context.get(rep, OutputStream)
    return context.add(Pollable(stream.ready))


def _to_debug_string(rep: int) -> str:
    return current().get(rep, IoError).message


# wasi:clocks/monotonic-clock


def _subscribe_instant(when: int) -> int:
    return current().add(timer(when / 1e9))


def _subscribe_duration(span: int) -> int:
    return current().add(timer(time.monotonic() + span / 1e9))


# wasi:cli stdio


def _stdout() -> int:
    context = current()
    return context.add(OutputStream(context.stdout or Console(None, 0)))


def _stderr() -> int:
    context = current()
    return context.add(OutputStream(context.stderr or Console(None, 0)))


def _stdin() -> int:
    context = current()
    empty = Pipe(context)
    empty.finish()
    return context.add(InputStream(empty))


FUNCTIONS: dict[str, dict[str, Callable[..., Any]]] = {
    "wasi:io/error": {"[method]error.to-debug-string": _to_debug_string},
    "wasi:io/poll": {
        "[method]pollable.ready": lambda rep: current().get(rep, Pollable).ready(),
        "[method]pollable.block": _block,
        "poll": _poll,
    },
    "wasi:io/streams": {
        "[method]input-stream.read": lambda rep, size: _read(rep, size, False),
        "[method]input-stream.blocking-read": lambda rep, size: _read(rep, size, True),
        "[method]input-stream.skip": lambda rep, size: _skip(rep, size, False),
        "[method]input-stream.blocking-skip": lambda rep, size: _skip(rep, size, True),
        "[method]input-stream.subscribe": _subscribe_input,
        "[method]output-stream.check-write": _check_write,
        "[method]output-stream.write": _write,
        "[method]output-stream.blocking-write-and-flush": _blocking_write,
        "[method]output-stream.flush": _flush,
        "[method]output-stream.blocking-flush": _flush,
        "[method]output-stream.subscribe": _subscribe_output,
        "[method]output-stream.write-zeroes": lambda rep, size: _write(rep, bytes(min(size, WRITE_PERMIT))),
        "[method]output-stream.blocking-write-zeroes-and-flush": lambda rep, size: _blocking_write(rep, bytes(min(size, WRITE_PERMIT))),
        "[method]output-stream.splice": lambda rep, source, size: _splice(rep, source, size, False),
        "[method]output-stream.blocking-splice": lambda rep, source, size: _splice(rep, source, size, True),
    },
    "wasi:clocks/monotonic-clock": {
        "now": time.monotonic_ns,
        "resolution": lambda: 1,
        "subscribe-instant": _subscribe_instant,
        "subscribe-duration": _subscribe_duration,
    },
    "wasi:cli/stdout": {"get-stdout": _stdout},
    "wasi:cli/stderr": {"get-stderr": _stderr},
    "wasi:cli/stdin": {"get-stdin": _stdin},
}
"""Each interface's functions by name (the interface named without its version)."""
