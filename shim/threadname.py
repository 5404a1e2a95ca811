"""Kernel-visible names for the daemon's threads (`ps -L`, top, /proc/PID/task/*/comm).

One daemon runs many containers' guests as threads: naming them lets an operator tell a
guest's CPU from the daemon's own, and lets tests count guests left behind.
"""

from __future__ import annotations

import ctypes

PR_SET_NAME = 15
GUEST = "wasm-guest"
RPC_HANDLER = "shim-rpc"
BLOCKING_IO = "shim-io"
POOLS = (RPC_HANDLER, BLOCKING_IO)
"""Bounded pools whose threads stay once started (up to 32 and 4)."""

_libc = ctypes.CDLL(None, use_errno=True)


def name_this_thread(name: str) -> None:
    """The kernel keeps 15 bytes; a failure only costs the name."""
    _libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
