"""One thread that accepts connections for many HTTP servers.

The shim's daemon may hold a thousand idle HTTP functions, each with its own listening socket:
a `serve_forever` thread per function would wake each of them twice a second and cost a thread
stack each. Here every listener sits in one epoll set, and a readable listener gets its
connection accepted and handed to its server (a thread per connection, as `serve` does).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socketserver
import threading
import time

log = logging.getLogger(__name__)
PAUSE = 0.1
"""Seconds a listener rests after accept() found no descriptor left."""


class Acceptor:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._quiet_until = 0.0
        self._paused: dict[socketserver.TCPServer, float] = {}
        """Listeners taken out of the set after accept() ran out of descriptors, and when to look again."""

    def _resume_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            for server in [server for server, due in self._paused.items() if due <= now]:
                del self._paused[server]
                self._selector.register(server.socket, selectors.EVENT_READ, server)

    def add(self, server: socketserver.TCPServer) -> None:
        """Start accepting for `server`, whose socket is bound and listening."""
        server.socket.setblocking(False)  # a connection reset before accept() must not block the others
        with self._lock:
            self._selector.register(server.socket, selectors.EVENT_READ, server)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="wasm-oci acceptor", daemon=True)
                self._thread.start()

    def remove(self, server: socketserver.TCPServer) -> None:
        """Stop accepting for `server`: once this returns, no new connection reaches it."""
        with self._lock, contextlib.suppress(KeyError, ValueError):
            self._paused.pop(server, None)
            self._selector.unregister(server.socket)
        os.write(self._wake_w, b"x")  # the loop may hold a ready event for it: it checks again under the lock

    def _loop(self) -> None:
        while True:
            timeout = max(0.0, min(self._paused.values()) - time.monotonic()) if self._paused else None
            for key, _ in self._selector.select(timeout):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                with self._lock:
                    if self._selector.get_map().get(key.fileobj) is not key:
                        continue  # removed since select() returned
                    self._accept(key.data)
            self._resume_due()

    def _accept(self, server: socketserver.TCPServer) -> None:
        try:
            request, address = server.get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of descriptors: the connection stays queued and the listener readable, so
                # watching it now would spin. Look again in a moment; the client waits meanwhile.
                if time.monotonic() >= self._quiet_until:  # once in a while, not ten times a second
                    log.warning("cannot accept on %s: %s; trying again every %.1f s", server.server_address, exc.strerror, PAUSE)
                    self._quiet_until = time.monotonic() + 10.0
                self._selector.unregister(server.socket)
                self._paused[server] = time.monotonic() + PAUSE
            return  # otherwise nothing was there after all (another wake-up took it, or the client reset)
        try:
            server.process_request(request, address)  # a thread per connection
        except Exception:
            log.exception("could not hand over a connection")
            server.shutdown_request(request)
