"""What a guest run is given: the run spec, mapped onto WASI by `wasi.py`.

Everything the guest can see is listed here; nothing else of the host (files, environment,
sockets) is visible to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Inherit = Literal["inherit"]
INHERIT: Inherit = "inherit"
"""A stdio stream shared with this process (the CLI's terminal); the shim uses paths instead."""


@dataclass(frozen=True)
class Preopen:
    """A host directory the guest sees at `guest`; read-only forbids every write below it."""

    host: Path
    guest: str
    read_only: bool = False


@dataclass(frozen=True)
class RunSpec:
    """One guest run.

    args: the full argv, argv[0] included. stdin: a file or FIFO path, the bytes themselves,
    INHERIT, or None (empty). stdout/stderr: a file or FIFO path (created or truncated),
    INHERIT, or None (discarded). memory_limit: bytes all the run's linear memories may
    hold together; a growth past it stops the guest with status 137 (reason "oom"), as the
    kernel's OOM killer stops a process over its cgroup's limit. timeout: wall-clock
    seconds from the start of the run until the guest is stopped.
    """

    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: Path | bytes | Inherit | None = None
    stdout: Path | Inherit | None = None
    stderr: Path | Inherit | None = None
    preopens: Sequence[Preopen] = ()
    memory_limit: int | None = None
    timeout: float | None = None
