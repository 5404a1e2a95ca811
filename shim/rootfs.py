"""A task's root filesystem: the mounts containerd passes with Create, mounted on
`<bundle>/rootfs` as runc's shim does (an overlay for a layered image, a bind mount for an
image without filesystem layers), and unmounted when the task is deleted.

mount(2) through ctypes: one syscall, where the `mount` command would cost a process.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable
from typing import Protocol

from wasm_oci.errors import MountError

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 0x20, 0x400, 0x800, 0x1000, 0x4000
MS_RELATIME, MS_STRICTATIME = 0x200000, 0x1000000
MNT_DETACH = 2

# Options that are mount flags; every other option is passed to the filesystem as data.
_FLAGS = {
    "ro": MS_RDONLY,
    "rw": 0,
    "nosuid": MS_NOSUID,
    "suid": 0,
    "nodev": MS_NODEV,
    "dev": 0,
    "noexec": MS_NOEXEC,
    "exec": 0,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
    "bind": MS_BIND,
    "rbind": MS_BIND | MS_REC,
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class Mount(Protocol):
    """containerd.types.Mount, as the generated message has it."""

    type: str
    source: str

    @property
    def options(self) -> Iterable[str]: ...


def _split(options: Iterable[str]) -> tuple[int, str]:
    flags, data = 0, []
    for option in options:
        if option in _FLAGS:
            flags |= _FLAGS[option]
        else:
            data.append(option)
    return flags, ",".join(data)


def _call(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise MountError(f"{what}: {os.strerror(code)}")


def mount(kind: str, source: str, target: str, options: Iterable[str]) -> None:
    flags, data = _split(options)
    if flags & MS_BIND or kind in ("bind", "rbind"):
        flags |= MS_BIND | (MS_REC if kind == "rbind" else 0)
        what = f"bind mount {source} on {target}"
        _call(_libc.mount(source.encode(), target.encode(), None, flags & ~MS_RDONLY, None), what)
        if flags & MS_RDONLY:  # a bind mount only becomes read-only on a remount
            _call(_libc.mount(None, target.encode(), None, flags | MS_REMOUNT, None), f"{what} (read-only)")
        return
    what = f"mount {kind} {source} on {target}"
    _call(_libc.mount(source.encode(), target.encode(), kind.encode(), flags, data.encode() or None), what)


def mount_all(mounts: Iterable[Mount], target: str) -> None:
    """Mount each in order on `target` (later ones on top); all undone if one fails."""
    try:
        for item in mounts:
            mount(item.type, item.source, target, item.options)
    except MountError:
        unmount(target)
        raise


def unmount(target: str) -> None:
    """Detach every mount stacked on `target`; a target that is not mounted is fine."""
    while _libc.umount2(target.encode(), MNT_DETACH) == 0:
        pass
    code = ctypes.get_errno()
    if code not in (errno.EINVAL, errno.ENOENT):
        raise MountError(f"unmount {target}: {os.strerror(code)}")
