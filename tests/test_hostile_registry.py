"""Hostile registries: whatever a registry answers, wasm-oci succeeds or fails with a project error.

The rule, for every case: the result is success or a `WasmOciError` (API) / a non-zero exit with
exactly one `wasm-oci: error:` line and no traceback (CLI); within a wall-clock bound (and, for
bodies that never end or inflate, a peak-RSS bound); no credential reaches another host; nothing
wrong is accepted; no tag, output file or unverified blob is left behind after a failure.

Cases are grouped in classes (shapes, transport, slow, bomb, pagination, fanout, auth), each
case a `Case` run against `services.hostile_registry.HostileRegistry` (and a second server,
`peer`, that must never see the registry's credentials). A summary line per class is printed
at the end of the run. Nothing is xfail: a failing case is a product bug to fix.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from services.hostile_registry import (  # noqa: E402
    OCI_INDEX,
    OCI_MANIFEST,
    HostileRegistry,
    MiB,
    descriptor,
    gzip_bomb,
    hello_artifact,
    sha256,
)
from wasm_oci.errors import WasmOciError  # noqa: E402

WASM_OCI = str(Path(sys.executable).with_name("wasm-oci"))
PRODUCT_DIRS = tuple(str(Path(__file__).resolve().parents[1] / d) + os.sep for d in ("oci", "signing", "cli", "wasm_oci", "engine"))
USER, PASSWORD = "alice", "s3cret-pw"
MEMORY_BOUND = 200 * MiB
API_BOUND = 8.0  # seconds, an in-process call against a misbehaving server
CLI_BOUND = 20.0
DEADLINE = 3.0  # the whole-operation deadline the slow cases set
SLACK = 4.0


# == the cases =====================================================================================
@dataclass(frozen=True)
class Case:
    klass: str
    name: str
    setup: Callable[[Env], None]
    op: str = "pull-o"  # inspect, pull, pull-o, copy, signatures, verify (API: signing.verify with a key nothing is signed with)
    via: str = "api"  # api or cli
    expect: str = "any"  # error (must fail with a project error), ok (must succeed), any
    creds: bool = False  # send -u/-p (the registry may demand them)
    bound: float | None = None
    memory: bool = False  # assert the CLI's peak RSS
    deadline: bool = False  # set RegistryOptions(deadline=) / --registry-timeout (required: the slow class)

    @property
    def id(self) -> str:
        return f"{self.klass}-{self.name}-{self.op}-{self.via}"


@dataclass
class Env:
    reg: HostileRegistry
    peer: HostileRegistry
    tmp: Path
    home: Path
    peer_auth_paths: set[str] = field(default_factory=set)  # peer paths allowed to see Authorization (token service)
    by_digest: str | None = None  # pull REPO@DIGEST instead of REPO:1.0

    @property
    def ref(self) -> str:
        if self.by_digest:
            return f"{self.reg.host}/acme/hello@{self.by_digest}"
        return f"{self.reg.host}/acme/hello:1.0"

    def expected_digest(self) -> str | None:
        """What a successful pull/copy must report: the digest of the bytes the registry holds for the reference."""
        return self.by_digest or self.reg.tags.get("1.0")

    @property
    def out(self) -> Path:
        return self.tmp / "out" / "hello.wasm"

    @property
    def dest(self) -> Path:
        return self.tmp / "dest"

    @property
    def store(self) -> Path:
        return self.home / "store"


# -- content builders --------------------------------------------------------------------------
def manifest_doc() -> dict[str, Any]:
    return json.loads(hello_artifact().manifest)


def seed_bytes(data: bytes, media_type: str = OCI_MANIFEST) -> Callable[[Env], None]:
    """The honest blobs, and `data` as the manifest under the tag."""

    def setup(env: Env) -> None:
        env.reg.seed_hello(tag="honest")
        env.reg.put_manifest(data, "1.0", media_type)

    return setup


def seed_doc(mutate: Callable[[dict[str, Any]], Any], media_type: str = OCI_MANIFEST) -> Callable[[Env], None]:
    doc = manifest_doc()
    mutate(doc)
    return seed_bytes(json.dumps(doc).encode(), media_type)


def seed_config(config: bytes, config_media_type: str | None = None) -> Callable[[Env], None]:
    """A manifest whose config descriptor points at `config` (with the right digest)."""

    def setup(env: Env) -> None:
        art = env.reg.seed_hello(tag="honest")
        env.reg.put_blob(config)
        doc = manifest_doc()
        doc["config"] = descriptor(config_media_type or art.config_media_type, config)
        env.reg.put_manifest(json.dumps(doc).encode(), "1.0")

    return setup


def seed_index(entries: Callable[[Env], list[Any]] | list[Any], extra: dict[str, Any] | None = None) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        env.reg.seed_hello(tag="honest")
        listed = entries(env) if callable(entries) else entries
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed, **(extra or {})}
        env.reg.put_manifest(json.dumps(doc).encode(), "1.0", OCI_INDEX)

    return setup


def wasm_entry(env: Env | None = None) -> dict[str, Any]:
    art = hello_artifact()
    return descriptor(OCI_MANIFEST, art.manifest, platform={"architecture": "wasm", "os": "wasip2"})


def honest(mode: str = "honest", **params: Any) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        if mode == "bomb.gzip":
            gzip_bomb()  # built before the clock starts
        env.reg.seed_hello()
        env.reg.mode = mode
        env.reg.params.update(params)

    return setup


def both(*setups: Callable[[Env], None]) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        for s in setups:
            s(env)

    return setup


def with_mode(mode: str, **params: Any) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        env.reg.mode = mode
        env.reg.params.update(params)

    return setup


def redirect_to_peer(on: str) -> Callable[[Env], None]:
    """Basic auth on the registry, and a 302 of `on` to the same path on the peer (which serves it honestly)."""

    def setup(env: Env) -> None:
        env.reg.seed_hello()
        env.peer.seed_hello()
        env.reg.basic = (USER, PASSWORD)
        env.reg.mode = "transport.redirect"
        art = hello_artifact()
        env.reg.params.update(on=on, location=f"{env.peer.url}/v2/acme/hello/blobs/{sha256(art.layer)}")

    return setup


# -- shapes ------------------------------------------------------------------------------------
DIGEST_OTHER = "sha256:" + "ab" * 32


def _layer(doc: dict[str, Any], **changes: Any) -> None:
    doc["layers"][0].update(changes)


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["layers"][0].pop(key)


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


MANIFEST_SHAPES: list[tuple[str, Callable[[Env], None], str]] = [
    ("manifest_is_list", seed_bytes(b"[]"), "error"),
    ("manifest_is_string", seed_bytes(b'"manifest"'), "error"),
    ("manifest_empty", seed_bytes(b""), "error"),
    ("manifest_null", seed_bytes(b"null"), "error"),
    ("config_is_int", seed_doc(lambda d: d.update(config=5)), "error"),
    ("config_missing", seed_doc(lambda d: d.pop("config")), "error"),
    ("config_is_list", seed_doc(lambda d: d.update(config=[d["config"]])), "error"),
    ("layers_is_string", seed_doc(lambda d: d.update(layers="abc")), "error"),
    ("layers_is_object", seed_doc(lambda d: d.update(layers={"0": d["layers"][0]})), "error"),
    ("layers_of_ints", seed_doc(lambda d: d.update(layers=[1, 2])), "error"),
    ("layers_null", seed_doc(lambda d: d.update(layers=None)), "error"),
    ("layer_no_digest", seed_doc(_drop("digest")), "error"),
    ("layer_no_size", seed_doc(_drop("size")), "error"),
    ("layer_no_media_type", seed_doc(_drop("mediaType")), "error"),
    ("layer_size_negative", seed_doc(lambda d: _layer(d, size=-1)), "error"),
    ("layer_size_huge", seed_doc(lambda d: _layer(d, size=2**63)), "error"),
    ("layer_size_bigger_than_json", seed_doc(lambda d: _layer(d, size=10**30)), "error"),
    ("layer_size_string", seed_doc(lambda d: _layer(d, size=str(d["layers"][0]["size"]))), "any"),
    ("layer_size_float", seed_doc(lambda d: _layer(d, size=float(d["layers"][0]["size"]))), "any"),
    ("layer_size_bool", seed_doc(lambda d: _layer(d, size=True)), "error"),
    ("layer_size_too_small", seed_doc(lambda d: _layer(d, size=d["layers"][0]["size"] - 1)), "error"),
    ("layer_size_too_big", seed_doc(lambda d: _layer(d, size=d["layers"][0]["size"] + 1)), "error"),
    ("layer_digest_traversal", seed_doc(lambda d: _layer(d, digest="sha256:../../x")), "error"),
    ("layer_digest_traversal_long", seed_doc(lambda d: _layer(d, digest="sha256:../../../../../../../../tmp/" + "x" * 40)), "error"),
    ("config_digest_traversal", seed_doc(lambda d: d["config"].update(digest="sha256:../../../index.json")), "error"),
    ("layer_digest_uppercase", seed_doc(lambda d: _layer(d, digest=d["layers"][0]["digest"].upper())), "error"),
    ("layer_digest_other", seed_doc(lambda d: _layer(d, digest=DIGEST_OTHER)), "error"),
    ("layer_digest_md5", seed_doc(lambda d: _layer(d, digest="md5:d41d8cd98f00b204e9800998ecf8427e")), "error"),
    ("layer_digest_int", seed_doc(lambda d: _layer(d, digest=12345)), "error"),
    ("layer_digest_newline", seed_doc(lambda d: _layer(d, digest=d["layers"][0]["digest"] + "\n")), "error"),
    ("layer_media_type_list", seed_doc(lambda d: _layer(d, mediaType=["application/wasm"])), "error"),
    ("layer_annotations_list", seed_doc(lambda d: _layer(d, annotations=["a"])), "any"),
    ("layer_annotations_nested", seed_doc(lambda d: _layer(d, annotations={"org.opencontainers.image.title": {"a": 1}})), "any"),
    (
        "layer_title_traversal",
        seed_doc(lambda d: _layer(d, annotations={"org.opencontainers.image.title": "../../../../escape.wasm"})),
        "any",
    ),
    ("manifest_media_type_int", seed_doc(lambda d: d.update(mediaType=5)), "any"),
    ("manifest_annotations_list", seed_doc(lambda d: d.update(annotations=["x"])), "any"),
    ("manifest_subject_string", seed_doc(lambda d: d.update(subject="sha256:x")), "any"),
    ("deep_nesting_list", seed_bytes(_deep(100_000)), "error"),
    ("deep_nesting_object", seed_bytes(b'{"a":' * 100_000 + b"1" + b"}" * 100_000), "error"),
    ("deep_nesting_in_field", seed_doc(lambda d: d.update(annotations=None, extra=[])), "any"),
    ("non_utf8", seed_bytes(b'{"schemaVersion":2,"config":"\xff\xfe"}'), "error"),
    ("utf16_bom", seed_bytes(json.dumps(manifest_doc()).encode("utf-16")), "any"),
    ("lone_surrogate", seed_doc(lambda d: _layer(d, mediaType="application/wasm\ud800")), "error"),
    ("duplicate_keys", seed_bytes(json.dumps(manifest_doc())[:-1].encode() + b',"config":5,"layers":"x"}'), "any"),
    ("nan_size", seed_bytes(json.dumps(manifest_doc()).replace('"size": 7749', '"size": NaN').encode()), "any"),
    ("huge_int_size", seed_bytes(json.dumps(manifest_doc()).replace('"size": 7749', '"size": ' + "9" * 5000).encode()), "error"),
    ("over_size_cap", seed_bytes(json.dumps({**manifest_doc(), "pad": " " * (5 * MiB)}).encode()), "any"),
    ("five_thousand_layers", seed_doc(lambda d: d.update(layers=d["layers"] * 5000)), "any"),
    ("no_wasm_layer", seed_doc(lambda d: _layer(d, mediaType="application/vnd.oci.image.layer.v1.tar")), "error"),
]

CONFIG_SHAPES: list[tuple[str, Callable[[Env], None], str]] = [
    ("config_blob_list", seed_config(b"[]"), "any"),
    ("config_blob_not_json", seed_config(b"\x00\x01garbage"), "any"),
    ("config_blob_non_utf8", seed_config(b'{"os":"\xff"}'), "any"),
    ("config_blob_deep", seed_config(_deep(100_000)), "any"),
    ("config_os_int", seed_config(b'{"os":5,"architecture":["wasm"]}'), "any"),
    ("config_config_string", seed_config(b'{"config":"x"}'), "any"),
    ("config_labels_list", seed_config(b'{"config":{"Labels":["a"]}}'), "any"),
    ("config_labels_values_int", seed_config(b'{"config":{"Labels":{"dev.wasm-oci.component.imports":5}}}'), "any"),
    ("config_entrypoint_string", seed_config(b'{"config":{"Entrypoint":"/hello.wasm","Env":{"A":"B"}}}'), "any"),
    ("config_artifact_component_int", seed_config(b'{"component":5}', "application/vnd.wasm.config.v0+json"), "any"),
    (
        "config_artifact_imports_mixed",
        seed_config(b'{"component":{"imports":[1,{"a":2}],"target":["x"]}}', "application/vnd.wasm.config.v0+json"),
        "any",
    ),
    ("config_huge_declared", seed_doc(lambda d: d["config"].update(size=2**40)), "error"),
    ("config_media_type_unknown", seed_config(b"\xff\xfe", "application/x-unknown"), "any"),
]

INDEX_SHAPES: list[tuple[str, Callable[[Env], None], str]] = [
    ("index_manifests_object", seed_index([], {"manifests": {"a": 1}}), "error"),
    ("index_manifests_ints", seed_index([1, 2, 3]), "error"),
    ("index_manifests_string", seed_index([], {"manifests": "sha256:x"}), "error"),
    ("index_platform_int", seed_index(lambda e: [{**wasm_entry(), "platform": 5}]), "any"),
    ("index_platform_values_objects", seed_index(lambda e: [{**wasm_entry(), "platform": {"architecture": {"x": 1}, "os": 5}}]), "any"),
    ("index_platform_list_arch", seed_index(lambda e: [{**wasm_entry(), "platform": {"architecture": ["wasm"], "os": ["wasip2"]}}]), "any"),
    ("index_child_missing", seed_index(lambda e: [{**wasm_entry(), "digest": DIGEST_OTHER}]), "error"),
    ("index_child_traversal", seed_index(lambda e: [{**wasm_entry(), "digest": "sha256:../../../../etc/passwd"}]), "error"),
    ("index_child_wrong_size", seed_index(lambda e: [{**wasm_entry(), "size": 1}]), "error"),
    ("index_child_blob_type", seed_index(lambda e: [{**wasm_entry(), "mediaType": "application/wasm"}]), "any"),
    ("index_empty", seed_index([]), "error"),
    ("index_served_as_manifest", seed_index(lambda e: [wasm_entry()], {"mediaType": OCI_MANIFEST}), "any"),
    ("manifest_served_as_index", seed_bytes(hello_artifact().manifest, OCI_INDEX), "any"),
]


def _swap_setup(env: Env) -> None:
    """HEAD without digest and GET serving another valid manifest, pulled BY DIGEST: must be refused."""
    art = env.reg.seed_hello()
    env.by_digest = art.manifest_digest
    doc = manifest_doc()
    doc["annotations"]["evil"] = "yes"
    env.reg.mode = "shapes.get_swapped"
    env.reg.params["swap"] = (OCI_MANIFEST, json.dumps(doc).encode())


HEADER_SHAPES: list[tuple[str, Callable[[Env], None], str]] = [
    ("head_no_digest_honest", honest("shapes.head_no_digest"), "ok"),
    ("head_content_length_text", honest("shapes.head_headers", headers={"Content-Length": "abc"}), "any"),
    ("head_content_length_negative", honest("shapes.head_headers", headers={"Content-Length": "-5"}), "any"),
    ("head_content_length_huge", honest("shapes.head_headers", headers={"Content-Length": str(2**70)}), "any"),
    # a header that disagrees with the body: refusing is right, and so is using the body's own
    # digest (the run then checks that the reported digest is the body's)
    ("head_digest_traversal", honest("shapes.head_headers", headers={"Docker-Content-Digest": "sha256:../../../x"}), "any"),
    ("head_digest_other", honest("shapes.head_headers", headers={"Docker-Content-Digest": DIGEST_OTHER}), "any"),
    ("head_digest_garbage", honest("shapes.head_headers", headers={"Docker-Content-Digest": "\x7f!!"}), "any"),
    ("head_content_type_garbage", honest("shapes.head_headers", headers={"Content-Type": "\x01;;;=="}), "any"),
    ("head_content_type_index", honest("shapes.head_headers", headers={"Content-Type": OCI_INDEX}), "any"),
]


def _ref_body(body: bytes) -> Callable[[Env], None]:
    return honest("shapes.referrers_body", body=body)


REFERRER_SHAPES: list[tuple[str, Callable[[Env], None], str]] = [
    ("referrers_list", _ref_body(b"[]"), "any"),
    ("referrers_manifests_string", _ref_body(b'{"manifests":"x"}'), "any"),
    ("referrers_manifests_ints", _ref_body(b'{"manifests":[1,2]}'), "any"),
    ("referrers_entry_bad_types", _ref_body(b'{"manifests":[{"mediaType":5,"digest":[],"size":"x"}]}'), "any"),
    (
        "referrers_entry_traversal",
        _ref_body(
            json.dumps(
                {
                    "manifests": [
                        {
                            "mediaType": OCI_MANIFEST,
                            "digest": "sha256:../../../x",
                            "size": 2,
                            "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                        }
                    ]
                }
            ).encode()
        ),
        "any",
    ),
    ("referrers_deep", _ref_body(_deep(100_000)), "any"),
    ("referrers_non_utf8", _ref_body(b"\xff\xfe\xfd"), "any"),
    (
        "referrers_annotations_list",
        _ref_body(json.dumps({"manifests": [{**descriptor(OCI_MANIFEST, b"x"), "annotations": [1]}]}).encode()),
        "any",
    ),
    (
        "referrers_ten_thousand",
        _ref_body(
            json.dumps(
                {
                    "manifests": [
                        descriptor(OCI_MANIFEST, b"%d" % n, artifactType="application/vnd.dev.sigstore.bundle.v0.3+json")
                        for n in range(10_000)
                    ]
                }
            ).encode()
        ),
        "any",
    ),
]

# inspect reads no layer, so a layer's wrong size or digest is not its to find; copy moves any OCI
# manifest, wasm or not (a manifest without layers is still a manifest)
NOT_AN_ERROR_FOR = {
    "inspect": {"layer_size_too_small", "layer_size_too_big", "layer_digest_other"},
    "copy": {"layers_null", "no_wasm_layer"},
}


def _expect(name: str, op: str, expect: str) -> str:
    return "any" if name in NOT_AN_ERROR_FOR.get(op, ()) else expect


SHAPE_CASES = (
    [Case("shapes", n, s, op, "api", _expect(n, op, e)) for n, s, e in MANIFEST_SHAPES for op in ("inspect", "pull-o", "copy")]
    + [Case("shapes", n, s, op, "api", e) for n, s, e in CONFIG_SHAPES + INDEX_SHAPES for op in ("inspect", "pull")]
    + [Case("shapes", n, s, op, "api", e) for n, s, e in HEADER_SHAPES for op in ("pull-o", "copy")]
    + [
        Case("shapes", "get_swapped_by_digest", _swap_setup, "pull-o", "api", "error"),
        Case("shapes", "get_swapped_by_digest", _swap_setup, "copy", "api", "error"),
    ]
    + [Case("shapes", n, s, "signatures", "api", e) for n, s, e in REFERRER_SHAPES]
    + [Case("shapes", n, s, "verify", "api", "error") for n, s, e in REFERRER_SHAPES]
    + [
        Case("shapes", n, s, "pull-o", "cli", e)
        for n, s, e in MANIFEST_SHAPES
        if n in ("manifest_is_list", "layer_size_negative", "layer_digest_traversal", "deep_nesting_list", "non_utf8")
    ]
    + [Case("shapes", n, s, "inspect", "cli", e) for n, s, e in REFERRER_SHAPES if n in ("referrers_deep", "referrers_manifests_ints")]
    + [Case("shapes", n, s, "pull", "cli", e) for n, s, e in HEADER_SHAPES if n in ("head_no_digest_honest", "head_content_length_text")]
)

# -- transport ---------------------------------------------------------------------------------
_PART = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
RAW = {
    "bad_status_line": b"HELLO WORLD\r\n\r\n",
    "http_0_9": b"just bytes, no status line at all",
    "garbage_chunked": _PART + b"Transfer-Encoding: chunked\r\n\r\nzzzz\r\nabc\r\n",
    "chunk_size_huge": _PART + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nabc\r\n",
    "content_length_text": _PART + b"Content-Length: abc\r\n\r\nhello",
    "content_length_conflict": _PART + b"Content-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    "content_length_over_body": _PART + b"Content-Length: 100000\r\n\r\n" + b"{" * 300,
    "overlong_header": _PART + b"X-Long: " + b"a" * 200_000 + b"\r\n\r\n",
    "too_many_headers": _PART + b"".join(b"X-%d: y\r\n" % n for n in range(2000)) + b"\r\n",
}


def _raw(on: str, name: str, reset: bool = False) -> Callable[[Env], None]:
    return honest("transport.raw", on=on, raw=RAW[name], reset=reset)


TRANSPORT: list[tuple[str, Callable[[Env], None], str]] = []
for _on in ("manifest", "manifest-get", "blob"):
    for _name in RAW:
        TRANSPORT.append((f"{_name}_on_{_on}", _raw(_on, _name), "error"))
    TRANSPORT.append(
        (
            f"reset_mid_body_on_{_on}",
            honest("transport.raw", on=_on, raw=_PART + b"Content-Length: 7749\r\n\r\n" + b"\0" * 100, reset=True),
            "error",
        )
    )
    TRANSPORT.append((f"redirect_loop_on_{_on}", honest("transport.redirect", on=_on, location="self"), "error"))
    TRANSPORT.append((f"redirect_ftp_on_{_on}", honest("transport.redirect", on=_on, location="ftp://127.0.0.1/x"), "error"))
    TRANSPORT.append((f"redirect_file_on_{_on}", honest("transport.redirect", on=_on, location="file:///etc/passwd"), "error"))
    TRANSPORT.append(
        (f"redirect_unresolvable_on_{_on}", honest("transport.redirect", on=_on, location="http://no-such-host.invalid/x"), "error")
    )
    TRANSPORT.append((f"redirect_no_scheme_on_{_on}", honest("transport.redirect", on=_on, location="//"), "error"))
    TRANSPORT.append((f"status_500_forever_on_{_on}", honest("transport.status", on=_on, status=500), "error"))
    TRANSPORT.append((f"status_429_forever_on_{_on}", honest("transport.status", on=_on, status=429), "error"))
TRANSPORT.append(("redirect_crlf_location", honest("transport.redirect", on="blob", location="http://127.0.0.1:1/\r\nX-Evil: 1"), "error"))

TRANSPORT_CASES = (
    [Case("transport", n, s, "pull-o", "api", e) for n, s, e in TRANSPORT]
    + [
        Case("transport", "redirect_blob_to_other_host", redirect_to_peer("blob"), op, "api", "any", creds=True)
        for op in ("pull-o", "copy")
    ]
    + [Case("transport", "redirect_blob_to_other_host", redirect_to_peer("blob"), "pull-o", "cli", "any", creds=True)]
    + [
        Case("transport", n, s, "pull-o", "cli", e)
        for n, s, e in TRANSPORT
        if n
        in (
            "redirect_loop_on_manifest",
            "redirect_ftp_on_blob",
            "redirect_file_on_blob",
            "garbage_chunked_on_blob",
            "content_length_text_on_manifest",
            "reset_mid_body_on_blob",
            "bad_status_line_on_manifest",
        )
    ]
)


# -- slow --------------------------------------------------------------------------------------
def _slow_token(env: Env) -> None:
    env.reg.seed_hello()
    env.reg.token_realm = f"{env.peer.url}/token"
    env.peer.mode = "slow.trickle"
    env.peer.params.update(on="token")
    env.peer_auth_paths.add("/token")


SLOW: list[tuple[str, Callable[[Env], None], str]] = [
    ("trickle_manifest_get", honest("slow.trickle", on="manifest-get"), "error"),
    ("trickle_manifest_resolve_get", honest("slow.trickle", on="manifest-get", head_no_digest=True), "error"),
    ("trickle_blob", honest("slow.trickle", on="blob"), "error"),
    ("trickle_status_line", honest("slow.trickle", on="manifest", headers=True), "error"),
    ("trickle_token_service", _slow_token, "error"),
]
SLOW_CASES = (
    [Case("slow", n, s, "pull-o", "api", e, deadline=True, bound=DEADLINE + SLACK) for n, s, e in SLOW]
    + [
        Case(
            "slow",
            "trickle_referrers",
            honest("slow.trickle", on="referrers"),
            "signatures",
            "api",
            "error",
            deadline=True,
            bound=DEADLINE + SLACK,
        )
    ]
    + [
        Case("slow", n, s, "pull-o", "cli", e, deadline=True, bound=DEADLINE + SLACK + 2)
        for n, s, e in SLOW
        if n in ("trickle_blob", "trickle_manifest_resolve_get", "trickle_token_service")
    ]
    + [
        Case(
            "slow",
            "trickle_referrers",
            honest("slow.trickle", on="referrers"),
            "inspect",
            "cli",
            "error",
            deadline=True,
            bound=DEADLINE + SLACK + 2,
        )
    ]
)


# -- endless / bomb (CLI, with a memory bound) -------------------------------------------------
def _big_token(env: Env) -> None:
    env.reg.seed_hello()
    env.reg.token_realm = f"{env.peer.url}/token"
    env.peer.mode = "auth.token_body"
    env.peer.params.update(token_total=100 * MiB)
    env.peer_auth_paths.add("/token")


BOMB: list[tuple[str, Callable[[Env], None], str, str]] = [
    ("endless_manifest_resolve_get", honest("bomb.endless", on="manifest-get", head_no_digest=True), "pull-o", "error"),
    ("endless_manifest_fetch", honest("bomb.endless", on="manifest-get"), "pull-o", "error"),
    ("endless_blob", honest("bomb.endless", on="blob", content_type="application/octet-stream"), "pull-o", "error"),
    ("endless_referrers", honest("bomb.endless", on="referrers", content_type=OCI_INDEX), "inspect", "any"),
    ("gzip_manifest_resolve_get", honest("bomb.gzip", on="manifest-get", head_no_digest=True), "pull-o", "error"),
    ("gzip_manifest_fetch", honest("bomb.gzip", on="manifest-get"), "pull-o", "error"),
    ("gzip_blob", honest("bomb.gzip", on="blob", content_type="application/octet-stream"), "pull-o", "error"),
    ("gzip_referrers", honest("bomb.gzip", on="referrers", content_type=OCI_INDEX), "inspect", "any"),
    ("gzip_error_body", honest("bomb.gzip", on="blob", status=400, content_type="application/json"), "pull-o", "error"),
    ("token_response_100MiB", _big_token, "pull-o", "error"),
    ("error_body_100MiB_on_blob", honest("auth.error_body", on="blob", status=500), "pull-o", "error"),
    ("error_body_100MiB_on_manifest_get", honest("auth.error_body", on="manifest-get", status=404, head_no_digest=True), "pull-o", "error"),
    ("error_body_100MiB_on_referrers", honest("auth.error_body", on="referrers", status=500), "inspect", "any"),
]
BOMB_CASES = [Case("bomb", n, s, op, "cli", e, memory=True, bound=CLI_BOUND) for n, s, op, e in BOMB]


# -- pagination --------------------------------------------------------------------------------
def _paginate(nxt: str | Callable[[Env], str], creds: bool = False) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        env.reg.seed_hello()
        env.peer.seed_hello()
        if creds:
            env.reg.basic = (USER, PASSWORD)
        env.reg.mode = "pagination.link"
        env.reg.params["next"] = nxt(env) if callable(nxt) else nxt

    return setup


def _peer_page(env: Env) -> str:
    return f"{env.peer.url}/v2/acme/hello/referrers/{hello_artifact().manifest_digest}"


PAGINATION: list[tuple[str, Callable[[Env], None], str, bool]] = [
    ("link_self_loop", _paginate("self"), "any", False),
    ("link_endless_chain", _paginate("chain"), "any", False),
    ("link_other_host_with_creds", _paginate(_peer_page, creds=True), "any", True),
    ("link_other_host_scheme_relative", _paginate(lambda e: f"//{e.peer.host}/v2/acme/hello/referrers/x", creds=True), "any", True),
    ("link_ftp", _paginate("ftp://127.0.0.1/x"), "any", False),
    ("link_file", _paginate("file:///etc/passwd"), "any", False),
    ("link_relative_no_slash", _paginate("page2"), "any", False),
    ("link_crlf", _paginate("/v2/x\r\nX-Evil: 1"), "any", False),
]
PAGINATION_CASES = [
    Case("pagination", n, s, op, "api", e if op == "signatures" else "error", creds=c, bound=API_BOUND)
    for n, s, e, c in PAGINATION
    for op in ("signatures", "verify")
] + [
    Case("pagination", n, s, "inspect", "cli", e, creds=c, bound=CLI_BOUND, memory=True)
    for n, s, e, c in PAGINATION
    if n in ("link_self_loop", "link_endless_chain", "link_other_host_with_creds")
]


# -- fan-out -----------------------------------------------------------------------------------
def _variant(n: int) -> bytes:
    doc = manifest_doc()
    doc["annotations"]["n"] = str(n)
    return json.dumps(doc).encode()


def _distinct_children(count: int) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        env.reg.seed_hello(tag="honest")
        entries = []
        for n in range(count):
            data = _variant(n)
            env.reg.put_manifest(data)
            entries.append(descriptor(OCI_MANIFEST, data, platform={"architecture": "wasm", "os": "wasip2"}))
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        env.reg.put_manifest(json.dumps(doc).encode(), "1.0", OCI_INDEX)

    return setup


def _nested(depth: int) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        art = env.reg.seed_hello(tag="honest")
        child = descriptor(OCI_MANIFEST, art.manifest, platform={"architecture": "wasm", "os": "wasip2"})
        for level in range(depth):
            doc = json.dumps(
                {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child], "annotations": {"level": str(level)}}
            ).encode()
            env.reg.put_manifest(doc, None, OCI_INDEX)
            child = descriptor(OCI_INDEX, doc, platform={"architecture": "wasm", "os": "wasip2"})
        top = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child]}).encode()
        env.reg.put_manifest(top, "1.0", OCI_INDEX)

    return setup


def _wide_and_deep(env: Env) -> None:
    """An index of 32 indexes, each listing the same 500 distinct manifests."""
    env.reg.seed_hello(tag="honest")
    leaves = []
    for n in range(500):
        data = _variant(n)
        env.reg.put_manifest(data)
        leaves.append(descriptor(OCI_MANIFEST, data, platform={"architecture": "wasm", "os": "wasip2"}))
    inner = []
    for n in range(32):
        doc = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": leaves, "annotations": {"n": str(n)}}).encode()
        env.reg.put_manifest(doc, None, OCI_INDEX)
        inner.append(descriptor(OCI_INDEX, doc))
    top = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [wasm_entry(), *inner]}).encode()
    env.reg.put_manifest(top, "1.0", OCI_INDEX)


def _many_layers(distinct: bool) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        art = env.reg.seed_hello(tag="honest")
        doc = manifest_doc()
        layers = [art.layer_desc]
        for n in range(500):
            blob = b"blob %d" % n if distinct else b"same blob"
            env.reg.put_blob(blob)
            layers.append(descriptor("application/octet-stream", blob))
        doc["layers"] = layers
        env.reg.put_manifest(json.dumps(doc).encode(), "1.0")

    return setup


FANOUT: list[tuple[str, Callable[[Env], None], str]] = [
    ("index_same_child_10000", seed_index(lambda e: [wasm_entry()] * 10_000), "any"),
    ("index_same_child_1000", seed_index(lambda e: [wasm_entry()] * 1000), "any"),
    ("index_distinct_children_1000", _distinct_children(1000), "any"),
    ("index_distinct_children_5000", _distinct_children(5000), "any"),
    ("nested_indexes_50", _nested(50), "any"),
    ("wide_and_deep_32x500", _wide_and_deep, "any"),
    ("manifest_500_distinct_layers", _many_layers(True), "any"),
    ("manifest_same_layer_500", _many_layers(False), "any"),
]
FANOUT_BOUND = 10.0
FANOUT_CASES = [Case("fanout", n, s, op, "api", e, bound=FANOUT_BOUND) for n, s, e in FANOUT for op in ("pull", "copy", "inspect")] + [
    Case("fanout", n, s, "pull", "cli", e, bound=FANOUT_BOUND + 3, memory=True)
    for n, s, e in FANOUT
    if n in ("index_same_child_10000", "index_distinct_children_5000", "nested_indexes_50", "wide_and_deep_32x500")
]


# -- auth --------------------------------------------------------------------------------------
def _challenge(header: str) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        env.reg.seed_hello()
        env.reg.challenge = header

    return setup


def _token_service(body: bytes | None = None, status: int = 200, **params: Any) -> Callable[[Env], None]:
    """Bearer auth; the realm is the peer, which answers the token request with `body`."""

    def setup(env: Env) -> None:
        env.reg.seed_hello()
        env.reg.token_realm = f"{env.peer.url}/token"
        env.peer_auth_paths.add("/token")
        if body is not None or params:
            env.peer.mode = "auth.token_body" if body is not None else "transport.redirect"
            env.peer.params.update(token_body=body, token_status=status, **params)

    return setup


AUTH: list[tuple[str, Callable[[Env], None], str, bool]] = [
    ("challenge_garbage", _challenge("\x01\x02 garbage ===,,,"), "error", True),
    ("challenge_empty", _challenge(""), "error", True),
    ("challenge_bearer_no_realm", _challenge("Bearer"), "error", True),
    ("challenge_bearer_empty_realm", _challenge('Bearer realm=""'), "error", True),
    ("challenge_realm_ftp", _challenge('Bearer realm="ftp://127.0.0.1/token",service="x"'), "error", True),
    ("challenge_realm_file", _challenge('Bearer realm="file:///etc/passwd"'), "error", True),
    ("challenge_realm_unresolvable", _challenge('Bearer realm="http://no-such-host.invalid/token"'), "error", True),
    ("challenge_realm_relative", _challenge('Bearer realm="/token"'), "error", True),
    ("challenge_realm_crlf", _challenge('Bearer realm="http://127.0.0.1:1/t\r\nX-Evil: 1"'), "error", True),
    ("challenge_negotiate", _challenge("Negotiate abc"), "error", True),
    ("challenge_basic_without_creds", _challenge('Basic realm="x"'), "error", False),
    ("challenge_huge", _challenge('Bearer realm="' + "a" * 60_000 + '"'), "error", True),
    ("token_service_other_host_ok", _token_service(), "ok", True),
    ("token_service_other_host_anonymous", _token_service(), "ok", False),
    ("token_list", _token_service(b"[]"), "error", True),
    ("token_string", _token_service(b'"tok"'), "error", True),
    ("token_int", _token_service(b'{"token": 5}'), "error", True),
    ("token_object", _token_service(b'{"token": {"a": 1}}'), "error", True),
    ("token_nulls", _token_service(b'{"token": null, "access_token": null}'), "error", True),
    ("token_empty_object", _token_service(b"{}"), "error", True),
    ("token_crlf", _token_service(b'{"token": "a\\r\\nX-Injected: 1"}'), "error", True),
    ("token_deep", _token_service(_deep(100_000)), "error", True),
    ("token_non_utf8", _token_service(b'{"token": "\xff\xfe"}'), "error", True),
    ("token_not_json", _token_service(b"<html>"), "error", True),
    ("token_status_500", _token_service(b"{}", 500), "error", True),
    ("token_redirect_ftp", _token_service(None, on="token", location="ftp://127.0.0.1/x"), "error", True),
    ("token_redirect_loop", _token_service(None, on="token", location="self"), "error", True),
]
AUTH_CASES = [Case("auth", n, s, "pull-o", "api", e, creds=c, bound=API_BOUND) for n, s, e, c in AUTH] + [
    Case("auth", n, s, "pull-o", "cli", e, creds=c, bound=CLI_BOUND)
    for n, s, e, c in AUTH
    if n in ("challenge_garbage", "challenge_realm_ftp", "token_service_other_host_ok", "token_list", "token_crlf", "token_deep")
]

ALL_CASES = SHAPE_CASES + TRANSPORT_CASES + SLOW_CASES + BOMB_CASES + PAGINATION_CASES + FANOUT_CASES + AUTH_CASES


# == summary per class =============================================================================
class _Tally:
    """Counts cases per class (passed/failed) and prints one line per class at the end."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if "test_hostile_registry.py::test_hostile[" not in report.nodeid:
            return
        klass = report.nodeid.split("[", 1)[1].split("-", 1)[0]
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self.counts.setdefault(klass, Counter())[report.outcome] += 1

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.section("hostile registry: cases per class")
        for klass, counts in self.counts.items():
            total = sum(counts.values())
            terminalreporter.write_line(f"{klass:<11} {total:4d} cases: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))


@pytest.fixture(scope="module", autouse=True)
def _class_summary(request: pytest.FixtureRequest) -> Iterator[None]:
    tally = _Tally()
    name = "hostile-registry-tally"
    if not request.config.pluginmanager.has_plugin(name):
        request.config.pluginmanager.register(tally, name)
    return


# == running one case ==============================================================================
def _supports_deadline_flag() -> bool:
    try:
        out = subprocess.run([WASM_OCI, "pull", "--help"], capture_output=True, timeout=30, text=True).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--registry-timeout" in out


_DEADLINE_FLAG: bool | None = None


def registry_options(case: Case) -> Any:
    """Per-read timeout always short; `deadline` required by the slow class, passed elsewhere when the product has it."""
    from wasm_oci.oci.options import RegistryOptions

    kwargs: dict[str, Any] = {"plain_http": True, "timeout": 5.0}
    if case.creds:
        kwargs.update(username=USER, password=PASSWORD)
    fields = {f.name for f in dataclasses.fields(RegistryOptions)}
    if case.deadline:
        kwargs["deadline"] = DEADLINE  # TypeError until RegistryOptions has it: that is the failure to see
    elif "deadline" in fields:
        kwargs["deadline"] = (case.bound or API_BOUND) - 2
    return RegistryOptions(**kwargs)


def _escape_point(exc: BaseException) -> str:
    """The innermost product frame the exception passed through: where it should have been caught."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(PRODUCT_DIRS)]
    if not frames:
        return "no product frame"
    f = frames[-1]
    return f"{os.path.relpath(f.filename, Path(__file__).resolve().parents[1])}:{f.lineno} ({f.line})"


@dataclass
class Outcome:
    ok: bool
    error: BaseException | None
    elapsed: float
    result: Any = None
    stderr: str = ""
    returncode: int | None = None
    maxrss: int | None = None


_KEY: Any = None


def _trusted_key() -> Any:
    global _KEY
    if _KEY is None:
        from wasm_oci.signing import keys

        _KEY = keys.generate("hostile-test key").public()
    return _KEY


def run_api(case: Case, env: Env) -> Outcome:
    from wasm_oci.oci import distribution as api
    from wasm_oci.signing import operations as signing

    def call() -> Any:
        options = registry_options(case)
        if case.op == "inspect":
            return api.inspect(env.ref, options)
        if case.op == "pull":
            return api.pull(env.ref, options)
        if case.op == "pull-o":
            env.out.parent.mkdir(exist_ok=True)
            return api.pull(env.ref, options, output=env.out)
        if case.op == "copy":
            return api.copy(env.ref, f"oci:{env.dest}:copied", options, options)
        if case.op == "signatures":
            return signing.signatures(env.ref, (), options)
        if case.op == "verify":  # nothing here is signed: a verification must never pass
            return signing.verify(env.ref, [_trusted_key()], options)
        raise AssertionError(case.op)

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:
            box["error"] = exc

    bound = case.bound or API_BOUND
    thread = threading.Thread(target=target, daemon=True, name=f"api-{case.id}")
    start = time.monotonic()
    thread.start()
    thread.join(bound + 2)
    elapsed = time.monotonic() - start
    if thread.is_alive():
        pytest.fail(f"{case.id}: the API call did not finish within {bound + 2:.0f}s (still running)", pytrace=False)
    error = box.get("error")
    return Outcome(error is None, error, elapsed, box.get("result"))


def cli_args(case: Case, env: Env) -> list[str]:
    ref = env.ref
    args = {
        "inspect": ["inspect", ref],
        "pull": ["pull", ref],
        "pull-o": ["pull", ref, "-o", str(env.out)],
        "copy": ["copy", ref, f"oci:{env.dest}:copied"],
    }[case.op]
    args.append("--plain-http")
    if case.creds:
        args += ["-u", USER, "-p", PASSWORD]
    global _DEADLINE_FLAG
    if _DEADLINE_FLAG is None:
        _DEADLINE_FLAG = _supports_deadline_flag()
    if case.deadline:
        args += ["--registry-timeout", f"{DEADLINE:g}"]  # a usage error until the CLI has it
    elif _DEADLINE_FLAG:
        args += ["--registry-timeout", f"{(case.bound or CLI_BOUND) - 3:g}"]
    return args


def run_cli(case: Case, env: Env) -> Outcome:
    """The real CLI as a child; its peak RSS sampled from /proc every 10 ms, its wall clock from here."""
    env.out.parent.mkdir(exist_ok=True)
    child_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "WASM_OCI_HOME": str(env.home),
        "HOME": str(env.tmp),
        "DOCKER_CONFIG": str(env.tmp / ".docker"),
        "NO_COLOR": "1",
        "LANG": "C.UTF-8",
    }
    bound = case.bound or CLI_BOUND
    start = time.monotonic()
    proc = subprocess.Popen(
        [WASM_OCI, *cli_args(case, env)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env
    )
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}

    def drain(pipe: Any, into: list[bytes]) -> None:
        for block in iter(lambda: pipe.read(65536), b""):
            if sum(map(len, into)) < 1 * MiB:
                into.append(block)

    readers = [
        threading.Thread(target=drain, args=(proc.stdout, chunks["out"]), daemon=True),
        threading.Thread(target=drain, args=(proc.stderr, chunks["err"]), daemon=True),
    ]
    for r in readers:
        r.start()
    status, peak, killed = 0, 0, False
    while True:
        peak = max(peak, _vm_hwm(proc.pid))
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - start > bound + 5:
            proc.kill()
            killed = True
            os.wait4(proc.pid, 0)
            break
        time.sleep(0.01)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - start
    for r in readers:
        r.join(5)
    stderr = b"".join(chunks["err"]).decode(errors="replace")
    if killed:
        pytest.fail(f"{case.id}: wasm-oci still running after {bound + 5:.0f}s; killed. stderr: {stderr[-400:]!r}", pytrace=False)
    return Outcome(proc.returncode == 0, None, elapsed, stderr=stderr, returncode=proc.returncode, maxrss=peak or None)


def _vm_hwm(pid: int) -> int:
    """The child's own peak RSS so far. Not wait4's ru_maxrss: Linux carries the RSS a child had
    when it was forked (this big test process's) into it across exec."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")), 0)
    except OSError:
        return 0


# == state after the run ===========================================================================
def _layout_problems(root: Path, allow_tags: bool) -> list[str]:
    problems = []
    if not root.exists():
        return problems
    for path in root.rglob("*"):
        if path.is_file() and (path.name.endswith(".tmp") or (path.name.startswith(".") and path.name != ".lock")):
            problems.append(f"temp file left behind: {path}")
    blobs = root / "blobs"
    if blobs.exists():
        for path in blobs.rglob("*"):
            if path.is_file() and path.parent.name == "sha256" and hashlib.sha256(path.read_bytes()).hexdigest() != path.name:
                problems.append(f"blob with content not matching its name: {path}")
    index = root / "index.json"
    if not allow_tags and index.exists():
        try:
            listed = json.loads(index.read_text()).get("manifests") or []
        except ValueError:
            listed = ["unreadable index.json"]
        if listed:
            problems.append(f"{index} lists {len(listed)} manifest(s) after a failure")
    return problems


def check_state(case: Case, env: Env, outcome: Outcome) -> None:
    problems = _layout_problems(env.store, outcome.ok) + _layout_problems(env.dest, outcome.ok)
    for path in env.tmp.rglob("*"):  # anything outside the two layouts that escaped (digest traversal)
        if path.is_file() and path.name in ("x", "pwn", "escape.wasm"):
            problems.append(f"file written outside the store: {path}")
    out_dir = env.out.parent
    if out_dir.exists():
        strays = [p for p in out_dir.iterdir() if p != env.out]
        if strays:
            problems.append(f"stray files next to the output: {strays}")
    if not outcome.ok and env.out.exists():
        problems.append(f"output file {env.out} exists after a failure")
    if outcome.ok and case.op == "pull-o" and (not env.out.exists() or env.out.read_bytes() != hello_artifact().layer):
        problems.append("pull -o reported success but the output is not the served wasm layer")
    assert not problems, f"{case.id}: " + "; ".join(problems)


def check_credentials(env: Env) -> None:
    leaked = [s for s in env.peer.requests_seen() if s.authorization and urlpath(s.path) not in env.peer_auth_paths]
    assert not leaked, f"credentials sent to another host ({env.peer.host}): " + ", ".join(
        f"{s.method} {s.path[:80]} Authorization={s.authorization[:20]}..." for s in leaked
    )
    if env.reg.basic:
        basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        to_peer = [s for s in env.peer.requests_seen() if s.authorization == basic and urlpath(s.path) != "/token"]
        assert not to_peer, f"the registry's Basic credentials went to {env.peer.host}"


def urlpath(path: str) -> str:
    return path.split("?", 1)[0]


def _cli_escape(stderr: str) -> str:
    """From a CLI traceback: the exception line and the innermost product frame."""
    lines = stderr.strip().splitlines()
    frames = [line.strip() for line in lines if line.strip().startswith("File ") and any(d in line for d in PRODUCT_DIRS)]
    return f"{lines[-1][:300] if lines else ''} | escaped at {frames[-1] if frames else 'no product frame'}"


def judge(case: Case, outcome: Outcome, expected: str | None = None) -> None:
    bound = case.bound or (CLI_BOUND if case.via == "cli" else API_BOUND)
    if case.via == "api":
        if outcome.error is not None and not isinstance(outcome.error, WasmOciError):
            exc = outcome.error
            pytest.fail(
                f"{case.id}: {type(exc).__module__}.{type(exc).__name__} escaped at {_escape_point(exc)}: {str(exc)[:300]}", pytrace=False
            )
        if case.expect == "error":
            assert not outcome.ok, f"{case.id}: hostile answer accepted (expected a project error)"
        if case.expect == "ok":
            assert outcome.ok, f"{case.id}: expected success, got {type(outcome.error).__name__}: {outcome.error}"
        if outcome.ok and case.op in ("pull", "pull-o", "copy") and expected:
            got = outcome.result.descriptor.digest
            assert got == expected, f"{case.id}: reported digest {got}, but the registry holds {expected} for the reference"
    else:
        err = outcome.stderr
        assert "Traceback" not in err, f"{case.id}: traceback (exit {outcome.returncode}): {_cli_escape(err)}"
        if case.expect == "ok":
            assert outcome.returncode == 0, f"{case.id}: expected success, exit {outcome.returncode}: {err[-400:]}"
        if case.expect == "error":
            assert outcome.returncode != 0, f"{case.id}: hostile answer accepted (exit 0)"
        if outcome.returncode != 0:
            lines = [line for line in err.splitlines() if line.startswith("wasm-oci: error:")]
            assert len(lines) == 1 and len(err.strip().splitlines()) == 1, (
                f"{case.id}: exit {outcome.returncode} with stderr not one 'wasm-oci: error:' line: {err[-600:]!r}"
            )
        if case.memory and outcome.maxrss is not None:
            assert outcome.maxrss < MEMORY_BOUND, f"{case.id}: peak RSS {outcome.maxrss / MiB:.0f} MiB >= {MEMORY_BOUND / MiB:.0f} MiB"
    assert outcome.elapsed < bound, f"{case.id}: took {outcome.elapsed:.1f}s, over the {bound:.0f}s bound"


@pytest.fixture
def hostile_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    home = tmp_path / "home"
    (tmp_path / ".docker").mkdir()
    for var in ("WASM_OCI_POLICY", "WASM_OCI_KEY_PASSWORD", "COSIGN_PASSWORD", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WASM_OCI_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / ".docker"))
    with HostileRegistry() as reg, HostileRegistry() as peer:
        yield Env(reg, peer, tmp_path, home)


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_hostile(case: Case, hostile_env: Env) -> None:
    case.setup(hostile_env)
    outcome = run_cli(case, hostile_env) if case.via == "cli" else run_api(case, hostile_env)
    judge(case, outcome, hostile_env.expected_digest())
    check_credentials(hostile_env)
    check_state(case, hostile_env, outcome)


def test_honest_server_serves_a_pullable_artifact(hostile_env: Env) -> None:
    """The harness itself: with no fault, pull/inspect/copy all succeed (else every case above is moot)."""
    hostile_env.reg.seed_hello()
    for op in ("inspect", "pull", "pull-o", "copy", "signatures"):
        case = Case("control", "honest", lambda e: None, op, "api", "ok")
        judge(case, run_api(case, hostile_env))
    check_state(Case("control", "honest", lambda e: None, "pull-o"), hostile_env, Outcome(True, None, 0))
