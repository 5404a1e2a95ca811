"""The exit statuses a guest's run can end with, as processes report them; the one place they
are computed (engine/result.py, the shim's tasks and `shim delete` take them from here).

Nothing but integers, in the shared base: `shim delete`, on containerd's critical path, uses
them without importing the engine (dataclasses, wasmtime).
"""

TRAP_STATUS = 128 + 6  # SIGABRT: wasmtime's CLI and an aborting native process
TIMEOUT_STATUS = 124  # as coreutils `timeout`
SIGKILL = 9


def killed(signal: int) -> int:
    """A process ended by `signal` (137 for SIGKILL, 143 for SIGTERM)."""
    return 128 + signal


OOM_STATUS = killed(SIGKILL)  # stopped as the kernel's OOM killer stops a process
