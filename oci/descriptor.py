"""The OCI content descriptor: what every store speaks in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wasm_oci.errors import RegistryError
from wasm_oci.oci import digest as digests


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict, compare=False)
    artifact_type: str | None = field(default=None, compare=False)
    platform: dict[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def for_bytes(cls, media_type: str, data: bytes, **extra: Any) -> "Descriptor":
        return cls(media_type, digests.of_bytes(data), len(data), **extra)

    @classmethod
    def from_json(cls, obj: Any) -> "Descriptor":
        try:
            return cls(
                media_type=str(obj["mediaType"]),
                digest=digests.validate(str(obj["digest"])),
                size=int(obj["size"]),
                annotations=dict(obj.get("annotations") or {}),
                artifact_type=obj.get("artifactType"),
                platform=obj.get("platform"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"malformed descriptor {obj!r}: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.platform:
            out["platform"] = self.platform
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out
