"""Parse the references users type: registry references, OCI layout paths and local-store names.

Grammar:
  registry:     HOST[:PORT]/REPO[/MORE][:TAG][@sha256:HEX]   (HOST has a dot or a port, or is localhost)
  layout:       oci:PATH[:TAG][@sha256:HEX]                  (an OCI image layout directory)
  local store:  NAME[/MORE][:TAG][@sha256:HEX]               (no host: the default local store)
A missing tag means `latest`, as with docker and oras.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from wasm_oci import paths
from wasm_oci.errors import InvalidReference
from wasm_oci.oci import digest as digests

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?$")
DEFAULT_TAG = "latest"


@dataclass(frozen=True)
class RegistryReference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after /manifests/ in the distribution API: the digest wins over the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> RegistryReference:
        return RegistryReference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


@dataclass(frozen=True)
class LayoutReference:
    """A manifest in an OCI image layout; `name` is its `org.opencontainers.image.ref.name`."""

    path: Path
    name: str | None = None
    digest: str | None = None
    local_store: bool = False

    @property
    def reference(self) -> str:
        """What the layout resolves: the digest wins over the name."""
        return self.digest or self.name or ""

    def with_digest(self, digest: str) -> LayoutReference:
        return LayoutReference(self.path, self.name, digest, self.local_store)

    def __str__(self) -> str:
        out = (self.name or "") if self.local_store else f"oci:{self.path}" + (f":{self.name}" if self.name else "")
        if self.digest:
            out += f"@{self.digest}"
        return out


Reference = RegistryReference | LayoutReference


def is_tag(text: str) -> bool:
    """Whether `text` is a tag by the distribution spec's grammar (what a registry lists must be)."""
    return _TAG.fullmatch(text) is not None


def _shown(text: str) -> str:
    """A reference as messages quote it: one bounded line, whatever was typed."""
    return repr(text if len(text) <= 200 else text[:200] + "...")


def _split_digest(text: str, original: str) -> tuple[str, str | None]:
    if "@" not in text:
        return text, None
    rest, digest = text.rsplit("@", 1)
    try:
        return rest, digests.validate(digest)
    except InvalidReference:
        raise InvalidReference(f"invalid reference {_shown(original)}: bad digest {_shown(digest)}") from None


def _split_tag(text: str, original: str) -> tuple[str, str | None]:
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon <= slash:
        return text, None
    tag = text[colon + 1 :]
    if not _TAG.fullmatch(tag):
        raise InvalidReference(f"invalid reference {_shown(original)}: bad tag {_shown(tag)}")
    return text[:colon], tag


def _is_dir(path: str, original: str) -> bool:
    try:
        return Path(path).is_dir()
    except OSError as exc:  # a name too long for the file system, no permission
        raise InvalidReference(f"invalid reference {_shown(original)}: layout path: {exc.strerror}") from None


def _looks_like_host(component: str) -> bool:
    return component == "localhost" or "." in component or ":" in component or component.startswith("[")


def parse(text: str) -> Reference:
    original = text
    if not text or any(c.isspace() for c in text):
        raise InvalidReference(f"invalid reference {_shown(original)}: empty or contains white space")
    if text.startswith("oci:"):
        rest, digest = _split_digest(text[4:], original)
        path, tag = _split_tag(rest, original) if not _is_dir(rest, original) else (rest, None)
        if not path:
            raise InvalidReference(f"invalid reference {_shown(original)}: missing layout path after 'oci:'")
        return LayoutReference(Path(path), tag or (None if digest else DEFAULT_TAG), digest)

    rest, digest = _split_digest(text, original)
    first, _, remainder = rest.partition("/")
    if remainder and _looks_like_host(first):
        port = first.rpartition(":")[2] if not first.endswith("]") else ""
        if not _HOST.fullmatch(first) or (port.isdigit() and not 0 < int(port) < 65536):
            raise InvalidReference(f"invalid reference {_shown(original)}: bad registry host {_shown(first)}")
        repository, tag = _split_tag(remainder, original)
        if not _REPOSITORY.fullmatch(repository):
            raise InvalidReference(
                f"invalid reference {_shown(original)}: repository {_shown(repository)} must be lowercase "
                "letters, digits and separators (. _ __ -), in /-separated parts"
            )
        if first == "docker.io" and "/" not in repository:
            repository = f"library/{repository}"
        return RegistryReference(first, repository, tag, digest)

    name, tag = _split_tag(rest, original)
    if not _REPOSITORY.fullmatch(name):
        raise InvalidReference(
            f"invalid reference {_shown(original)}: expected HOST[:PORT]/REPO[:TAG], oci:PATH[:TAG] "
            "or a local-store NAME[:TAG] (lowercase letters, digits, . _ -)"
        )
    tag = tag or (None if digest else DEFAULT_TAG)
    return LayoutReference(paths.local_store(), f"{name}:{tag}" if tag else None, digest, local_store=True)
