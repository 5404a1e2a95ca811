"""The OCI content descriptor: what every store speaks in."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from wasm_oci.errors import InvalidReference, MalformedContent
from wasm_oci.oci import digest as digests

_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")
MAX_SIZE = 1 << 53
"""Sizes past JSON's exact integers are not sizes any store could hold."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict, compare=False)
    artifact_type: str | None = field(default=None, compare=False)
    platform: dict[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def for_bytes(cls, media_type: str, data: bytes, **extra: Any) -> Descriptor:
        return cls(media_type, digests.of_bytes(data), len(data), **extra)

    @classmethod
    def from_json(cls, obj: Any, what: str = "descriptor") -> Descriptor:
        """A descriptor from untrusted JSON: every field checked, or MalformedContent naming `what`."""
        if not isinstance(obj, dict):
            raise MalformedContent(f"{what}: a descriptor must be an object, not {type(obj).__name__}")
        media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
        if not isinstance(media_type, str) or not _MEDIA_TYPE.fullmatch(media_type):
            raise MalformedContent(f"{what}: bad mediaType {str(media_type)[:80]!r}")
        if not isinstance(digest, str):
            raise MalformedContent(f"{what}: `digest` must be a string")
        try:
            digests.validate(digest)
        except InvalidReference:
            raise MalformedContent(f"{what}: bad digest {digest[:140]!r}") from None
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
            raise MalformedContent(f"{what}: `size` must be a non-negative integer, not {str(size)[:40]!r}")
        annotations = obj.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            raise MalformedContent(f"{what}: `annotations` must be an object of strings")
        artifact_type = obj.get("artifactType")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise MalformedContent(f"{what}: `artifactType` must be a string")
        platform = obj.get("platform")
        if platform is not None and not (isinstance(platform, dict) and all(isinstance(v, (str, list)) for v in platform.values())):
            raise MalformedContent(f"{what}: `platform` must be an object of strings")
        return cls(media_type, digest, size, dict(annotations), artifact_type, platform)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.platform:
            out["platform"] = self.platform
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out
