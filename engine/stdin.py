"""Stdin the engine can close, so that a guest blocked reading it still stops when told to.

Wasmtime reads a stdin file, or the inherited stdin, with a blocking read nothing can cut
short: a killed or timed-out guest waited for its client to write or close. So a stdin that
can block (a FIFO, a pipe, a terminal) is not given to Wasmtime. Wasmtime gets the read end
of a pipe of the engine's own, and one relay thread for all runs copies the real source into
it (epoll, non-blocking descriptors; while the pipe is full the source is not read, so a slow
guest holds its writer back as a direct read would). Stopping the run closes the pipe's write
end: the guest's read returns end-of-file, it is back in Wasm and trapped at its next epoch
check. The source's own end-of-file (the client closed stdin) reaches the guest the same way.

A regular file or /dev/null never blocks a read (and epoll refuses it): Wasmtime reads those
itself, as before; so does it a socket the CLI inherits as stdin (which /proc cannot open anew).
"""

from __future__ import annotations

import os
import select
import stat
import threading
from pathlib import Path

from wasm_oci.engine.spec import INHERIT, Inherit

_CHUNK = 1 << 16
_READY, _ROOM = select.EPOLLIN, select.EPOLLOUT


class Stream:
    """One run's relay from `source` to the pipe end `sink`; `close()` from any thread."""

    def __init__(self, source: int, sink: int) -> None:
        self.source, self.sink = source, sink
        self.pending = b""
        """Read from the source, not yet taken by the pipe."""
        self.watched: int | None = None
        """The descriptor the relay waits on: the source, or the sink while `pending`."""
        self.closed = False

    def watch(self) -> None:
        """Start relaying (when the guest is entered): copies what is there now, and reads
        the source's end-of-file now if no writer holds it, as a direct read would."""
        with _relay.lock:
            _relay.pump(self)

    def close(self) -> None:
        with _relay.lock:
            _relay.close(self)


class _Relay:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._epoll: select.epoll | None = None
        self._watching: dict[int, Stream] = {}

    def start(self) -> None:
        """The thread starts with the first relayed run's setup, never on a guest's entry."""
        with self.lock:
            if self._epoll is None:
                self._epoll = select.epoll()
                threading.Thread(target=self._loop, name="wasm-oci-stdin", daemon=True).start()

    def _loop(self) -> None:
        assert self._epoll is not None
        while True:
            events = self._epoll.poll()
            with self.lock:
                for fd, _ in events:
                    stream = self._watching.get(fd)
                    if stream is not None:
                        self.pump(stream)

    def pump(self, stream: Stream) -> None:
        """Move what can move without blocking, then wait on what is missing (under the lock)."""
        if stream.closed:
            return
        try:
            if not stream.pending:
                stream.pending = os.read(stream.source, _CHUNK)
                if not stream.pending:
                    self.close(stream)  # the source's end-of-file: the guest's too
                    return
            stream.pending = stream.pending[os.write(stream.sink, stream.pending) :]
        except BlockingIOError:
            pass
        except OSError:  # the guest's end is closed (EPIPE), the terminal went away (EIO)
            self.close(stream)
            return
        wanted = stream.sink if stream.pending else stream.source
        if stream.watched != wanted:
            assert self._epoll is not None
            if stream.watched is not None:
                self._epoll.unregister(stream.watched)
                del self._watching[stream.watched]
            self._epoll.register(wanted, _ROOM if stream.pending else _READY)
            self._watching[wanted] = stream
            stream.watched = wanted

    def close(self, stream: Stream) -> None:
        if stream.closed:
            return
        stream.closed = True
        if stream.watched is not None:
            assert self._epoll is not None
            self._epoll.unregister(stream.watched)
            del self._watching[stream.watched]
        os.close(stream.source)
        os.close(stream.sink)


_relay = _Relay()


def _may_block(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or (stat.S_ISCHR(mode) and os.isatty(fd))


def relayed(value: Path | Inherit) -> tuple[Stream, int] | None:
    """A relay for a stdin that can block, and the read end of its pipe for Wasmtime (the
    caller closes it once Wasmtime opened it through /proc/self/fd); None for one that cannot
    block. Raises OSError when the path cannot be opened.

    The source is opened anew, non-blocking, never blocking itself: a FIFO's open for reading
    does not wait for a writer then, and the CLI's own stdin (shared with its shell) keeps
    its flags."""
    if value == INHERIT:
        try:
            if not _may_block(0):
                return None
        except OSError:  # no stdin at all: Wasmtime's inherited one is as empty
            return None
        path = "/proc/self/fd/0"
    else:
        path = str(value)
    source = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not _may_block(source):
            os.close(source)
            return None
        guest_end, sink = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(sink, False)
    except BaseException:
        os.close(source)
        raise
    _relay.start()
    return Stream(source, sink), guest_end
