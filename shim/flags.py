"""The shim's command line, as containerd writes it (Go `flag` syntax), plus the daemon's own flags.

containerd runs `<shim> -namespace NS -address SOCK -publish-binary BIN -id ID [-bundle DIR]
[-debug] start|delete`. `start` re-executes the shim as the daemon with `serve` and the flags
below it. Stdlib-only and no dataclasses: `start` and `delete` are on the critical path of
every container start and stop, and `dataclasses` alone costs ~13 ms to import here.
"""

from __future__ import annotations

from wasm_oci.errors import UsageError

ACTIONS = ("start", "delete", "serve")

_STRINGS = {
    "namespace": "namespace",
    "address": "address",
    "publish-binary": "publish_binary",
    "id": "id",
    "bundle": "bundle",
    "socket": "socket",
    # The daemon's own (start -> serve).
    "group-dir": "group_dir",
    "config": "config",
    "ready-fd": "ready_fd",
}
_BOOLS = {"debug": "debug", "v": "version"}


class Flags:
    """The parsed command line; unset strings are "". Attributes are spelled out (not set in a
    loop) so that the type checker knows them."""

    __slots__ = (*_STRINGS.values(), *_BOOLS.values(), "action")

    def __init__(self) -> None:
        self.namespace = self.address = self.publish_binary = self.id = self.bundle = self.socket = ""
        self.group_dir = self.config = self.ready_fd = ""
        self.debug = self.version = False
        self.action = ""

    def argv(self) -> list[str]:
        """These flags as a command line (the action not included)."""
        out: list[str] = []
        for flag, name in _STRINGS.items():
            if getattr(self, name):
                out += [f"-{flag}", getattr(self, name)]
        out += [f"-{flag}" for flag, name in _BOOLS.items() if getattr(self, name)]
        return out


def parse(args: list[str]) -> Flags:
    """Go flag rules: `-name value`, `-name=value`, `--name` alike; flags stop at the first
    non-flag word, which is the action."""
    flags = Flags()
    words = iter(args)
    for word in words:
        if not word.startswith("-") or word in ("-", "--"):
            if word not in ACTIONS:
                raise UsageError(f"unknown action {word!r} (expected start or delete)")
            flags.action = word
            rest = list(words)
            if rest:
                raise UsageError(f"unexpected arguments after {word}: {' '.join(rest)}")
            break
        name, has_value, value = word.lstrip("-").partition("=")
        if name in _BOOLS:
            setattr(flags, _BOOLS[name], value.lower() not in ("false", "0") if has_value else True)
        elif name in _STRINGS:
            if not has_value:
                following = next(words, None)
                if following is None:
                    raise UsageError(f"flag needs an argument: -{name}")
                value = following
            setattr(flags, _STRINGS[name], value)
        else:
            raise UsageError(f"flag provided but not defined: -{name}")
    return flags
