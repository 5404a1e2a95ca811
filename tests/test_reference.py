"""Reference grammar: what users type must land in the right store, and bad input must say why."""

from __future__ import annotations

from pathlib import Path

import pytest

from wasm_oci.errors import InvalidReference
from wasm_oci.oci.reference import LayoutReference, RegistryReference, parse

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000/hello:v1", RegistryReference("127.0.0.1:5000", "hello", "v1")),
        ("localhost/a/b/c", RegistryReference("localhost", "a/b/c", None)),
        ("ghcr.io/acme/app@" + DIGEST, RegistryReference("ghcr.io", "acme/app", None, DIGEST)),
        ("ghcr.io/acme/app:1.0@" + DIGEST, RegistryReference("ghcr.io", "acme/app", "1.0", DIGEST)),
        ("docker.io/hello", RegistryReference("docker.io", "library/hello", None)),
        ("[::1]:5000/x:y", RegistryReference("[::1]:5000", "x", "y")),
    ],
)
def test_registry_references(text: str, expected: RegistryReference) -> None:
    assert parse(text) == expected


def test_missing_tag_means_latest_on_the_wire() -> None:
    ref = parse("localhost:5000/app")
    assert isinstance(ref, RegistryReference) and ref.reference == "latest"


def test_layout_references(tmp_path: Path) -> None:
    assert parse(f"oci:{tmp_path}/out:v2") == LayoutReference(tmp_path / "out", "v2")
    assert parse(f"oci:{tmp_path}") == LayoutReference(tmp_path, "latest")
    assert parse(f"oci:{tmp_path}@{DIGEST}") == LayoutReference(tmp_path, None, DIGEST)


def test_bare_names_go_to_the_local_store(private_home: Path) -> None:
    ref = parse("hello")
    assert isinstance(ref, LayoutReference) and ref.local_store
    assert ref.name == "hello:latest" and ref.path == private_home / "data" / "store"
    assert parse("team/hello:2").name == "team/hello:2"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("Bad Ref", "white space"),
        ("localhost:5000/UPPER:1", "lowercase"),
        ("localhost:5000/app:bad/tag", "lowercase"),
        ("localhost:5000/app:-x", "bad tag"),
        ("localhost:5000/app@sha256:123", "bad digest"),
        ("oci:", "missing layout path"),
        ("hello world", "white space"),
        ("UPPER", "expected HOST"),
    ],
)
def test_malformed_references_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(InvalidReference, match=problem):
        parse(text)
