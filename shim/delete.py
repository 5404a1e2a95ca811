"""`shim delete`: containerd's cleanup after it lost a task's connection (and after every
normal shutdown), on the critical path of each container stop.

After containerd's Delete RPC the daemon left the answer in the bundle (the sh launcher
prints it without Python; this is the same for when it handed over). If the task's daemon
is alive and still has the task, the daemon stops and forgets it and reports how it ended. Otherwise (the daemon died, or the task was already deleted) the task
is gone with it: unmount its rootfs if the daemon left it mounted and report what runc
reports for a container it had to kill, 128 + SIGKILL.
"""

from __future__ import annotations

import os
import time

from wasm_oci.errors import UsageError
from wasm_oci.shim import control, wire
from wasm_oci.shim.flags import Flags
from wasm_oci.status import OOM_STATUS as KILLED  # what runc reports for a SIGKILL


def _mounted(path: str) -> bool:
    """Whether `path` is a mount point in this mount namespace (cheaper than importing ctypes)."""
    escaped = path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")
    with open("/proc/self/mountinfo") as file:
        return any(line.split(" ", 5)[4] == escaped for line in file)


def delete(flags: Flags) -> bytes:
    """The serialized DeleteResponse containerd expects on stdout."""
    if not flags.namespace or not flags.id:
        raise UsageError("delete needs -namespace and -id")
    bundle = flags.bundle or os.getcwd()
    try:
        with open(os.path.join(bundle, control.DELETED_RECORD), "rb") as record:
            return control.unprintable(record.read())
    except (OSError, ValueError):  # none, or not whole: ask the daemon as if there were none
        pass
    exited = None
    try:
        with open(os.path.join(bundle, control.BUNDLE_RECORD), encoding="utf-8") as file:
            exited = control.delete(file.read().strip(), flags.namespace, flags.id)
    except OSError:
        pass  # start never got this far: nothing was handed to a daemon
    if exited is None:
        rootfs = os.path.join(bundle, "rootfs")
        if _mounted(rootfs):
            from wasm_oci.shim import rootfs as mounts

            mounts.unmount(rootfs)
        exited = control.Exited(0, KILLED, time.time_ns())
    return wire.delete_response(exited.pid, exited.status, exited.exited_at_ns)
