"""wasi:http `fields` (headers and trailers): the rules Wasmtime's host applies.

Names are tokens (RFC 9110), kept lowercase as hyper keeps them; values are visible ASCII,
spaces, tabs and obs-text, never CR, LF, NUL or another control character. A guest may not set
the forbidden headers (hop-by-hop ones and `host`, as Wasmtime's list). Fields a guest reads
off a request or response are immutable: set, append and delete answer `immutable`. Each
fields value is capped (MAX_BYTES), so a guest cannot make the host hold unbounded headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

FORBIDDEN = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "host",
        "http2-settings",
    }
)
MAX_BYTES = 128 * 1024
"""Names and values of one fields value, in all (Wasmtime's default field size limit is the same order)."""

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


class HeaderError(Exception):
    """The header-error case a fields operation answers: invalid-syntax, forbidden or immutable."""

    def __init__(self, case: str) -> None:
        super().__init__(case)
        self.case = case


class FieldsFull(Exception):
    """The fields would pass MAX_BYTES."""


def valid_name(name: str) -> bool:
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        return False
    return _TOKEN.fullmatch(raw) is not None


def valid_value(value: bytes) -> bool:
    return _VALUE.fullmatch(value) is not None


def _checked(name: str, values: Iterable[bytes], guest: bool) -> tuple[str, list[bytes]]:
    if not valid_name(name):
        raise HeaderError("invalid-syntax")
    key = name.lower()
    if guest and key in FORBIDDEN:
        raise HeaderError("forbidden")
    checked = [bytes(value) for value in values]
    if not all(valid_value(value) for value in checked):
        raise HeaderError("invalid-syntax")
    return key, checked


class Fields:
    """An ordered multimap of lowercase names to byte values."""

    def __init__(self, entries: Iterable[tuple[str, bytes]] = (), mutable: bool = True, guest: bool = True) -> None:
        """`guest`: the entries come from the guest and obey the forbidden list; the host's own
        (a request's headers as a client sent them) are only checked for syntax."""
        self.entries: list[tuple[str, bytes]] = []
        self.mutable = mutable
        self.size = 0
        for name, value in entries:
            key, (checked,) = _checked(name, [value], guest)
            self._add(key, checked)

    def _add(self, key: str, value: bytes) -> None:
        size = self.size + len(key) + len(value)
        if size > MAX_BYTES:
            raise FieldsFull(f"fields over {MAX_BYTES} bytes")
        self.entries.append((key, value))
        self.size = size

    def _mutate(self) -> None:
        if not self.mutable:
            raise HeaderError("immutable")

    def get(self, name: str) -> list[bytes]:
        key = name.lower()
        return [value for entry, value in self.entries if entry == key]

    def has(self, name: str) -> bool:
        key = name.lower()
        return any(entry == key for entry, _ in self.entries)

    def set(self, name: str, values: Iterable[bytes]) -> None:
        key, checked = _checked(name, values, guest=True)
        self._mutate()
        self._remove(key)
        for value in checked:
            self._add(key, value)

    def delete(self, name: str) -> None:
        if not valid_name(name):
            raise HeaderError("invalid-syntax")
        key = name.lower()
        if key in FORBIDDEN:
            raise HeaderError("forbidden")
        self._mutate()
        self._remove(key)

    def append(self, name: str, value: bytes) -> None:
        key, (checked,) = _checked(name, [value], guest=True)
        self._mutate()
        self._add(key, checked)

    def clone(self) -> Fields:
        copy = Fields()
        copy.entries, copy.size = list(self.entries), self.size
        return copy

    def _remove(self, key: str) -> None:
        kept = [(entry, value) for entry, value in self.entries if entry != key]
        self.size = sum(len(entry) + len(value) for entry, value in kept)
        self.entries = kept
