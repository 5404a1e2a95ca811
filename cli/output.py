"""Terminal output: one-line errors, JSON or human results, and a progress line on a TTY."""

from __future__ import annotations

import json
import re
import sys
import time
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from wasm_oci.oci.descriptor import Descriptor

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` with control characters escaped: what a registry or a manifest says cannot move
    the cursor, recolour the terminal or add a line to a one-line error."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


class ProgressLine:
    """Per-blob progress on stderr, redrawn at most 10 times a second; silent when stderr is not a TTY."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.enabled = sys.stderr.isatty()
        self._done: dict[str, int] = {}
        self._last = 0.0

    def __call__(self, desc: Descriptor, moved: int) -> None:
        if not self.enabled:
            return
        done = self._done[desc.digest] = self._done.get(desc.digest, 0) + moved
        now = time.monotonic()
        if done < desc.size and now - self._last < 0.1:
            return
        self._last = now
        short = desc.digest.split(":", 1)[1][:12]
        sys.stderr.write(f"\r{self.verb} {short} {human_size(done)} / {human_size(desc.size)}\033[K")
        if done >= desc.size:
            sys.stderr.write("\n")
        sys.stderr.flush()
