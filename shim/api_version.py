"""Which task API the calling containerd speaks: 3 (containerd 2.x) or 2 (1.6/1.7).

`start` announces it in its bootstrap JSON, and containerd 1.7 refuses anything above 2
("unsupported shim version (3)") while 2.x picks its task client by it. Both call `start`
identically (same flags, same MAX_SHIM_VERSION=2), so the answer comes from the
`-publish-binary` containerd names: `containerd --version` (~15 ms), remembered in `run_dir`
against the binary's inode, size and mtime so later starts pay one stat.
"""

from __future__ import annotations

import os

CURRENT, LEGACY = 3, 2


def _ask(binary: str) -> int:
    """Run `BINARY --version`: "containerd github.com/containerd/containerd 1.7.24 ..." -> 2."""
    read, write = os.pipe()
    try:
        pid = os.posix_spawn(
            binary, [binary, "--version"], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, write, 1), (os.POSIX_SPAWN_CLOSE, read)]
        )
    finally:
        os.close(write)
    try:
        output = b""
        while chunk := os.read(read, 4096):
            output += chunk
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    words = output.split()
    version = words[2].decode(errors="replace").lstrip("v") if len(words) > 2 else ""
    return LEGACY if version.startswith(("1.", "0.")) else CURRENT


def task_api(publish_binary: str, run_dir: str) -> int:
    """The task API version of the containerd at `publish_binary` (CURRENT when unknown)."""
    if not publish_binary:
        return CURRENT
    try:
        info = os.stat(publish_binary)
    except OSError:
        return CURRENT
    stamp = f"{publish_binary}\0{info.st_ino}\0{info.st_size}\0{info.st_mtime_ns}\0"
    memo = os.path.join(run_dir, "containerd-api")
    try:
        with open(memo) as file:
            known = file.read()
        if known.startswith(stamp):
            return int(known[len(stamp) :])
    except (OSError, ValueError):
        pass
    try:
        version = _ask(publish_binary)
    except OSError:
        return CURRENT
    temporary = f"{memo}.{os.getpid()}"
    try:
        with open(temporary, "w") as file:
            file.write(f"{stamp}{version}")
        os.replace(temporary, memo)
    except OSError:
        pass  # only costs the next start another --version
    return version
