"""The daemon's control socket: how `start` and `delete` talk to a running daemon.

One text line each way, so the client needs neither protobuf nor asyncio:
  RESERVE <namespace> <id>   -> OK <task socket address, as `start` announces it> | NO <reason>
      hold a place for a task `start` is about to hand to containerd; also the liveness probe
      (a daemon that is shutting down answers NO, a dead one does not answer)
  DELETE <namespace> <id>    -> EXITED <pid> <exit status> <exited at, ns> | GONE
      `shim delete` after containerd lost the task's connection: stop and forget the task
containerd ids and namespaces never contain spaces (its identifiers are [A-Za-z0-9_.-]).
The client uses `_socket` directly: the `socket` module costs ~7 ms to import.
"""

from __future__ import annotations

import _socket

TIMEOUT = 10.0
BUNDLE_RECORD = "wasm-oci-control"
"""A file `start` writes in the task's bundle: the path of the daemon's control socket."""
DELETED_RECORD = "wasm-oci-deleted"
"""A file the daemon writes in the task's bundle at the Delete RPC: the serialized
DeleteResponse as one line of printf(1) octal escapes (`printable`), which `shim delete` prints
back to bytes; the sh launcher with builtins alone (reading the bytes would exec `cat` per delete)."""


def printable(data: bytes) -> bytes:
    """`data` as a line printf(1) turns back into exactly it: every byte an octal escape, so no
    byte is a format directive, a backslash sequence or a NUL the shell cannot hold."""
    return "".join(f"\\{byte:03o}" for byte in data).encode("ascii") + b"\n"


def unprintable(line: bytes) -> bytes:
    """The bytes a `printable` line stands for; ValueError if it is not one."""
    text = line.decode("ascii").removesuffix("\n")
    escapes = text.split("\\")
    if escapes[0] or any(len(escape) != 3 for escape in escapes[1:]):
        raise ValueError("not a line of octal escapes")
    return bytes(int(escape, 8) for escape in escapes[1:])


class Exited:
    __slots__ = ("exited_at_ns", "pid", "status")

    def __init__(self, pid: int, status: int, exited_at_ns: int) -> None:
        self.pid, self.status, self.exited_at_ns = pid, status, exited_at_ns


def _ask(path: str, line: str, timeout: float) -> str | None:
    """The daemon's answer, or None when nothing listens at `path` or it hung up."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                return None
            answer += chunk
        return answer.decode().rstrip("\n")
    except OSError:
        return None
    finally:
        sock.close()


def reserve(path: str, namespace: str, task_id: str, timeout: float = TIMEOUT) -> str | None:
    """The task socket address of a live daemon that accepted the task, else None."""
    answer = _ask(path, f"RESERVE {namespace} {task_id}", timeout)
    if answer is None or not answer.startswith("OK "):
        return None
    return answer[3:]


def delete(path: str, namespace: str, task_id: str, timeout: float = TIMEOUT) -> Exited | None:
    """How the task ended if a live daemon still had it (it is gone now), else None."""
    answer = _ask(path, f"DELETE {namespace} {task_id}", timeout)
    words = (answer or "").split()
    if len(words) != 4 or words[0] != "EXITED":
        return None
    return Exited(int(words[1]), int(words[2]), int(words[3]))
