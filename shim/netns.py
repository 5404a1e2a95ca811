"""Listening sockets in a task's network namespace, from a daemon that serves many tasks.

A socket belongs to the network namespace of the thread that created it, for its whole life;
setns(2) of a network namespace changes only the calling thread. So a short-lived thread
enters the task's namespace, binds and listens, and ends: the daemon's other threads never
leave containerd's network. What the OCI spec says decides which namespace:
  - a `network` entry with a path (a pod's, set up by CNI; `ctr --with-ns`): that one;
  - a `network` entry without a path (a new one, as runc would create): a fresh namespace
    with only loopback up, so nothing outside reaches the function, as with runc;
  - no `network` entry: the host's (Kubernetes hostNetwork, `ctr --net-host`).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

from wasm_oci.errors import RpcError

CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_BACKLOG = 128


@dataclass(frozen=True)
class Network:
    path: str | None = None
    """The namespace to enter; None: the daemon's own (the host's)."""
    new: bool = False
    """A fresh namespace of the task's own (a `network` entry without a path)."""


def _libc_call(name: str, *args: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{name}: {os.strerror(error)}")


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(probe, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(probe, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def _enter(network: Network) -> None:
    if network.path is not None:
        fd = os.open(network.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _libc_call("setns", fd, CLONE_NEWNET)
        finally:
            os.close(fd)
    elif network.new:
        _libc_call("unshare", CLONE_NEWNET)
        _loopback_up()


def listen(network: Network, host: str, port: int) -> socket.socket:
    """A TCP socket listening on host:port in `network` (INVALID_ARGUMENT / FAILED_PRECONDITION
    naming what failed: a namespace that is gone, a port in use)."""
    result: list[socket.socket | BaseException] = []

    def inside() -> None:
        try:
            _enter(network)
            result.append(_bound(host, port))
        except BaseException as exc:
            result.append(exc)

    _in_thread(inside)
    outcome = result[0]
    if isinstance(outcome, socket.socket):
        return outcome
    where = f"the network namespace {network.path}" if network.path else "a new network namespace" if network.new else "the host network"
    if isinstance(outcome, OSError):
        raise RpcError("FAILED_PRECONDITION", f"cannot listen on {host}:{port} in {where}: {outcome.strerror or outcome}")
    raise outcome


def connect(network: Network, address: tuple[str, int], timeout: float) -> socket.socket:
    """A TCP connection to `address` made from inside `network` (an HTTP function's outgoing
    request leaves from its pod's network, not the node's); OSError as socket.create_connection
    raises it. The name is resolved there too, with the node's resolver configuration."""
    result: list[socket.socket | BaseException] = []

    def inside() -> None:
        try:
            _enter(network)
            result.append(socket.create_connection(address, timeout))
        except BaseException as exc:
            result.append(exc)

    _in_thread(inside)
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def _bound(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restarted function rebinds while old connections linger
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def _in_thread(work: Callable[[], None]) -> None:
    """Run `work` on a thread of its own that ends with it, taking any namespace it entered."""
    thread = threading.Thread(target=work, name="wasm-oci netns", daemon=True)
    thread.start()
    thread.join()
