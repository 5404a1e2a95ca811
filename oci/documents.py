"""The JSON documents of the OCI specs, parsed from untrusted bytes into typed values.

Everything a registry or a layout hands over (manifests, indexes, configs, referrers lists,
`index.json`) passes through here before the rest of the code reads it: a size cap, strict
UTF-8, bounded nesting, and a type check of every field that is used, so a wrong shape is one
`MalformedContent` naming the document and the field, never a `KeyError` three layers away.
Fields nobody reads are left as they are: the specs let documents carry more.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wasm_oci.errors import MalformedContent
from wasm_oci.oci.descriptor import Descriptor

MAX_DOCUMENT = 4 << 20
"""Manifests, indexes, configs and signatures: the distribution spec's manifest limit."""
MAX_ENTRIES = 1024
"""Descriptors one manifest (layers) or index (manifests) may list."""


def load(data: bytes, what: str, limit: int = MAX_DOCUMENT) -> dict[str, Any]:
    """`data` as a JSON object; `what` names the document in the error."""
    if len(data) > limit:
        raise MalformedContent(f"{what} is {len(data)} bytes, over the {limit}-byte limit")
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise MalformedContent(f"{what} is not UTF-8 text") from None
    except RecursionError:
        raise MalformedContent(f"{what} nests too deeply") from None
    except ValueError as exc:
        raise MalformedContent(f"{what} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise MalformedContent(f"{what} is a JSON {type(doc).__name__}, not an object")
    return doc


def text(doc: Mapping[str, Any], key: str, what: str, default: str | None = None) -> str | None:
    """An optional string field: absent gives `default`, another type is an error."""
    value = doc.get(key, default)
    if value is not None and not isinstance(value, str):
        raise MalformedContent(f"{what}: `{key}` must be a string, not {type(value).__name__}")
    return value


def strings(doc: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    """An optional list of strings (null or absent: empty)."""
    value = doc.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise MalformedContent(f"{what}: `{key}` must be a list of strings")
    return tuple(value)


def string_map(doc: Mapping[str, Any], key: str, what: str) -> dict[str, str]:
    """An optional object of string values (annotations, labels)."""
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise MalformedContent(f"{what}: `{key}` must be an object of strings")
    return dict(value)


def section(doc: Mapping[str, Any], key: str, what: str) -> dict[str, Any]:
    """An optional nested object (null or absent: empty)."""
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedContent(f"{what}: `{key}` must be an object, not {type(value).__name__}")
    return value


def descriptors(doc: Mapping[str, Any], key: str, what: str) -> tuple[Descriptor, ...]:
    value = doc.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MalformedContent(f"{what}: `{key}` must be a list of descriptors")
    if len(value) > MAX_ENTRIES:
        raise MalformedContent(f"{what}: `{key}` lists {len(value)} descriptors, over the limit of {MAX_ENTRIES}")
    return tuple(Descriptor.from_json(entry, f"{what}: {key}[{n}]") for n, entry in enumerate(value))


@dataclass(frozen=True)
class Manifest:
    """An image manifest (OCI or Docker v2 schema 2)."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Index:
    """An image index (OCI) or manifest list (Docker), and a referrers list's shape."""

    manifests: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict)


def manifest(data: bytes, what: str) -> Manifest:
    doc = load(data, what)
    if "config" not in doc:
        raise MalformedContent(f"{what} has no `config`")
    subject = doc.get("subject")
    return Manifest(
        config=Descriptor.from_json(doc["config"], f"{what}: config"),
        layers=descriptors(doc, "layers", what),
        subject=Descriptor.from_json(subject, f"{what}: subject") if subject is not None else None,
        artifact_type=text(doc, "artifactType", what),
        annotations=string_map(doc, "annotations", what),
    )


def index(data: bytes, what: str) -> Index:
    doc = load(data, what)
    return Index(descriptors(doc, "manifests", what), string_map(doc, "annotations", what))
