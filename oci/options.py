"""How to reach a registry (or not to); kept apart from `remote` so callers need not import the HTTP stack."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RegistryOptions:
    plain_http: bool = False
    ca_file: Path | None = None
    insecure_skip_tls_verify: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = 60.0
    """Seconds one socket operation (connect, a read) may wait."""
    deadline: float = 600.0
    """Seconds a whole operation (a pull, a push, a copy: every request of it) may take."""
    offline: bool = False
    """Never contact a registry: registry references are read from the local store (by the
    name they were pulled under, or by digest) or not at all."""

    @property
    def verify(self) -> bool | str:
        if self.ca_file:
            return str(self.ca_file)
        return not self.insecure_skip_tls_verify
