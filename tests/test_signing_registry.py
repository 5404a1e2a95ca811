"""Signing against the real registry and the real cosign: cosign accepts what we sign, we verify
what cosign signs (both layouts), and unsigned, foreign, misdirected or tampered signatures are
refused before anything is written."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.registry import RegistryServer
from services.tools import MissingToolError, ToolRunner
from services.wasmgen import HELLO
from wasm_oci.errors import SignatureError
from wasm_oci.oci import distribution as api
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.options import RegistryOptions
from wasm_oci.oci.reference import parse
from wasm_oci.oci.target import Target, fetch_bytes
from wasm_oci.signing import keys, sigstore_bundle, simplesigning
from wasm_oci.signing import operations as signing

PLAIN = RegistryOptions(plain_http=True)
PASSWORD = "correct horse"
BUNDLE_TYPE = "https://sigstore.dev/cosign/sign/v1"  # what `cosign verify` prints for a bundle signature
LEGACY_TYPE = "cosign container image signature"


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    cosign: ToolRunner  # the real cosign, COSIGN_PASSWORD set for this pair
    signing_config: Path  # empty: cosign signs offline, no Fulcio, no Rekor

    def load(self) -> keys.PrivateKey:
        return keys.load_private(self.private, PASSWORD)

    def trusted(self) -> keys.PublicKey:
        return keys.load_public(self.public)


def _cosign(workdir: Path) -> tuple[ToolRunner, Path]:
    try:
        runner = ToolRunner("cosign", workdir / "home", {"COSIGN_PASSWORD": PASSWORD})
    except MissingToolError as exc:
        pytest.fail(str(exc), pytrace=False)
    runner("signing-config", "create", "--out", workdir / "signing-config.json")
    return runner, workdir / "signing-config.json"


@pytest.fixture(scope="module")
def cosign_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A pair made by `cosign generate-key-pair`."""
    workdir = tmp_path_factory.mktemp("cosign-keys")
    runner, config = _cosign(workdir)
    runner("generate-key-pair", cwd=workdir)
    return KeyPair(workdir / "cosign.key", workdir / "cosign.pub", runner, config)


@pytest.fixture(scope="module")
def our_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A pair made by `wasm-oci keygen`'s library call."""
    workdir = tmp_path_factory.mktemp("our-keys")
    private, public = signing.keygen(workdir / "release", PASSWORD)
    return KeyPair(private, public, *_cosign(workdir))


def _push(registry: RegistryServer, repo: str | None = None, tag: str = "v1") -> tuple[str, str]:
    """A fresh artifact (its own digest); returns (REPO:TAG, digest)."""
    ref = f"{registry.host}/signing/{repo or uuid.uuid4().hex[:10]}:{tag}"
    result = api.push(str(HELLO), ref, PLAIN, PLAIN, package_options=api.PackageOptions(annotations={"test": uuid.uuid4().hex}))
    return ref, result.descriptor.digest


def _repo_of(ref: str) -> str:
    return ref.rsplit(":", 1)[0]


def _cosign_sign(pair: KeyPair, ref: str, digest: str, layout: str) -> None:
    modes = {
        "bundle": ["--signing-config", pair.signing_config],
        "legacy": ["--use-signing-config=false", "--new-bundle-format=false", "--tlog-upload=false"],
    }
    pair.cosign("sign", "--key", pair.private, *modes[layout], "--allow-http-registry", "-y", f"{_repo_of(ref)}@{digest}")


def _cosign_verify(pair: KeyPair, public: Path, ref: str, digest: str, *extra: str) -> tuple[bool, list[dict]]:
    result = pair.cosign(
        "verify", "--key", public, "--insecure-ignore-tlog=true", "--allow-http-registry", *extra, f"{_repo_of(ref)}@{digest}", check=False
    )
    return result.returncode == 0, json.loads(result.stdout) if result.returncode == 0 else []


def _target(ref: str) -> Target:
    return api.open_target(parse(ref), PLAIN)


# -- interop with cosign -------------------------------------------------------------------------


@pytest.mark.peer
@pytest.mark.parametrize(("layout", "claim_type"), [("bundle", BUNDLE_TYPE), ("legacy", LEGACY_TYPE)])
def test_cosign_verifies_what_we_sign(
    registry: RegistryServer, our_keys: KeyPair, cosign_keys: KeyPair, layout: str, claim_type: str
) -> None:
    ref, digest = _push(registry)
    result = signing.sign(ref, our_keys.load(), PLAIN, (layout,))
    assert result.digest == digest and [a.layout for a in result.attached] == [layout]
    ok, claims = _cosign_verify(our_keys, our_keys.public, ref, digest)
    assert ok and [c["critical"]["type"] for c in claims] == [claim_type]
    assert claims[0]["critical"]["image"]["docker-manifest-digest"] == digest
    assert _cosign_verify(our_keys, cosign_keys.public, ref, digest) == (False, [])


@pytest.mark.peer
def test_our_two_layouts_sit_side_by_side_for_cosign(registry: RegistryServer, our_keys: KeyPair) -> None:
    ref, digest = _push(registry)
    signing.sign(ref, our_keys.load(), PLAIN)
    assert _cosign_verify(our_keys, our_keys.public, ref, digest)[0]
    ok, claims = _cosign_verify(our_keys, our_keys.public, ref, digest, "--new-bundle-format=false")
    assert ok and claims[0]["critical"]["type"] == LEGACY_TYPE


@pytest.mark.peer
@pytest.mark.parametrize("layout", ["bundle", "legacy"])
def test_we_verify_what_cosign_signs(registry: RegistryServer, cosign_keys: KeyPair, our_keys: KeyPair, layout: str) -> None:
    ref, digest = _push(registry)
    _cosign_sign(cosign_keys, ref, digest, layout)
    verification = signing.verify(ref, [cosign_keys.trusted()], PLAIN)
    assert [(f.candidate.layout, f.status) for f in verification.findings] == [(layout, "verified")]
    with pytest.raises(SignatureError, match="signed by another key"):
        signing.verify(ref, [our_keys.trusted()], PLAIN)


@pytest.mark.peer
def test_cosign_signs_with_our_key_and_we_sign_with_cosigns(registry: RegistryServer, cosign_keys: KeyPair, our_keys: KeyPair) -> None:
    ref, digest = _push(registry)
    _cosign_sign(our_keys, ref, digest, "bundle")  # cosign reading our key file
    signing.sign(ref, cosign_keys.load(), PLAIN, ("bundle",))  # we read cosign's
    statuses = {f.key.name: f.status for f in signing.verify(ref, [cosign_keys.trusted(), our_keys.trusted()], PLAIN).findings if f.key}
    assert statuses == {str(cosign_keys.public): "verified", str(our_keys.public): "verified"}
    assert _cosign_verify(cosign_keys, cosign_keys.public, ref, digest)[0]


def _shape(manifest: dict) -> dict:
    return {
        "artifactType": manifest.get("artifactType"),
        "config": manifest["config"]["mediaType"],
        "layers": [layer["mediaType"] for layer in manifest["layers"]],
        "annotations": sorted(manifest.get("annotations", {})),
        "subject": manifest.get("subject", {}).get("digest"),
    }


@pytest.mark.peer
def test_our_bundle_referrer_has_the_shape_cosign_writes(registry: RegistryServer, cosign_keys: KeyPair, our_keys: KeyPair) -> None:
    ref, digest = _push(registry)
    _cosign_sign(cosign_keys, ref, digest, "bundle")
    signing.sign(ref, our_keys.load(), PLAIN, ("bundle",))
    target = _target(ref)
    index = json.loads(fetch_bytes(target, target.resolve(parse(f"{_repo_of(ref)}:{digest.replace(':', '-')}").reference), "index"))
    theirs, ours = (json.loads(fetch_bytes(target, Descriptor.from_json(entry), "referrer")) for entry in index["manifests"])
    assert _shape(ours) == _shape(theirs) and _shape(ours)["subject"] == digest
    assert ours["annotations"][sigstore_bundle.PREDICATE_ANNOTATION] == theirs["annotations"][sigstore_bundle.PREDICATE_ANNOTATION]
    assert index["manifests"][1]["artifactType"] == sigstore_bundle.MEDIA_TYPE  # cosign lists its own as the empty type


@pytest.mark.peer
def test_push_sign_key_signs_in_the_same_step(wasm_oci: ToolRunner, registry: RegistryServer, our_keys: KeyPair) -> None:
    ref = f"{registry.host}/signing/push-signed:v1"
    wasm_oci.env["WASM_OCI_KEY_PASSWORD"] = PASSWORD
    pushed = wasm_oci("push", HELLO, ref, "--plain-http", "--sign-key", our_keys.private, "--annotation", f"t={uuid.uuid4()}")
    reference = pushed.stdout.strip()
    digest = reference.rsplit("@", 1)[1]
    assert f"Signed {digest}: bundle (tag {digest.replace(':', '-')}), legacy (tag {digest.replace(':', '-')}.sig)" in pushed.stderr
    assert _cosign_verify(our_keys, our_keys.public, ref, digest)[0]
    assert _cosign_verify(our_keys, our_keys.public, ref, digest, "--new-bundle-format=false")[0]
    verified = wasm_oci("verify", ref, "--plain-http", "--key", our_keys.public)
    assert verified.stdout.strip() == reference and verified.stderr.count("Verified:") == 2
    out = wasm_oci.home / "hello.wasm"
    pulled = wasm_oci("pull", ref, "--plain-http", "--verify-key", our_keys.public, "-o", out)
    assert out.read_bytes() == HELLO.read_bytes() and "Verified: bundle signature" in pulled.stderr


@pytest.mark.peer
def test_sign_cli_reads_cosign_password_and_reports_json(wasm_oci: ToolRunner, registry: RegistryServer, cosign_keys: KeyPair) -> None:
    ref, digest = _push(registry)
    wasm_oci.env["COSIGN_PASSWORD"] = PASSWORD
    doc = json.loads(
        wasm_oci("sign", ref, "--plain-http", "--key", cosign_keys.private, "--signature-format", "legacy", "--format", "json").stdout
    )
    assert doc["digest"] == digest and [s["layout"] for s in doc["signatures"]] == ["legacy"]
    assert _cosign_verify(cosign_keys, cosign_keys.public, ref, digest)[1][0]["critical"]["type"] == LEGACY_TYPE
    wasm_oci.env["COSIGN_PASSWORD"] = "wrong"
    refused = wasm_oci("sign", ref, "--plain-http", "--key", cosign_keys.private, check=False)
    assert refused.returncode == 13 and "wrong password" in refused.stderr and "Traceback" not in refused.stderr


def test_inspect_lists_signatures_and_the_keys_that_verify_them(
    wasm_oci: ToolRunner, registry: RegistryServer, our_keys: KeyPair, cosign_keys: KeyPair
) -> None:
    ref, _digest = _push(registry)
    signing.sign(ref, our_keys.load(), PLAIN)
    signing.sign(ref, cosign_keys.load(), PLAIN, ("bundle",))
    doc = json.loads(wasm_oci("inspect", ref, "--plain-http", "--verify-key", our_keys.public, "--format", "json").stdout)
    rows = sorted((s["layout"], s["status"], s["verifiedBy"]) for s in doc["signatures"])
    assert rows == [
        ("bundle", "other-key", None),
        ("bundle", "verified", str(our_keys.public)),
        ("legacy", "verified", str(our_keys.public)),
    ]
    text = wasm_oci("inspect", ref, "--plain-http").stdout
    assert "Signatures:   3" in text and text.count("unchecked") == 3 and our_keys.trusted().hint in text


# -- refusals: nothing is written ------------------------------------------------------------------


def _refused_pull(wasm_oci: ToolRunner, ref: str, public: Path, message: str) -> str:
    out = wasm_oci.home / "out.wasm"
    result = wasm_oci("pull", ref, "--plain-http", "--verify-key", public, "-o", out, check=False)
    assert result.returncode == 11, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not out.exists() and not (wasm_oci.home / "data").exists()
    return result.stderr


def test_unsigned_artifact_is_refused(wasm_oci: ToolRunner, registry: RegistryServer, our_keys: KeyPair) -> None:
    ref, digest = _push(registry)
    stderr = _refused_pull(wasm_oci, ref, our_keys.public, "is not signed")
    assert digest in stderr


@pytest.mark.parametrize("layout", ["bundle", "legacy"])
def test_signature_by_another_key_is_refused(
    wasm_oci: ToolRunner, registry: RegistryServer, our_keys: KeyPair, cosign_keys: KeyPair, layout: str
) -> None:
    ref, _ = _push(registry)
    signing.sign(ref, cosign_keys.load(), PLAIN, (layout,))
    stderr = _refused_pull(wasm_oci, ref, our_keys.public, "signed by another key")
    assert cosign_keys.trusted().hint[:12] in stderr


def _get_json(target: Target, ref: str) -> dict:
    return json.loads(fetch_bytes(target, target.resolve(parse(ref).reference), ref))


def _put(target: Target, media_type: str, data: bytes, tag: str | None = None) -> Descriptor:
    """Store a blob, or with `tag` a manifest; what an attacker with push access can do."""
    desc = Descriptor.for_bytes(media_type, data)
    if tag is None:
        target.push_blob(desc, [data])
    else:
        target.push_manifest(desc, data, tag)
    return desc


def _move_legacy(target: Target, repo: str, source: str, dest: str, edit: bool) -> None:
    manifest = _get_json(target, f"{repo}:{simplesigning.tag(source)}")
    if edit:  # a payload naming `dest`, under the signature made for `source`
        payload = _put(target, simplesigning.LAYER, simplesigning.payload(repo, dest))
        manifest["layers"][0].update(digest=payload.digest, size=payload.size)
        config, _ = simplesigning.signature_manifest([Descriptor.from_json(manifest["layers"][0])])
        manifest["config"] = _put(target, "application/vnd.oci.image.config.v1+json", config).to_json()
    _put(target, manifest["mediaType"], json.dumps(manifest).encode(), simplesigning.tag(dest))


def _move_bundle(target: Target, repo: str, source: str, dest: str, edit: bool) -> None:
    index = _get_json(target, f"{repo}:{source.replace(':', '-')}")
    if edit:  # a statement naming `dest`, under the signature made for `source`
        referrer = json.loads(fetch_bytes(target, Descriptor.from_json(index["manifests"][0]), "referrer"))
        doc = json.loads(fetch_bytes(target, Descriptor.from_json(referrer["layers"][0]), "bundle"))
        statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
        statement["subject"][0]["digest"]["sha256"] = dest.split(":")[1]
        doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
        layer = _put(target, sigstore_bundle.MEDIA_TYPE, json.dumps(doc).encode())
        desc, manifest = sigstore_bundle.manifest(layer, target.resolve(parse(f"{repo}@{dest}").reference))
        target.push_manifest(desc, manifest, None)
        index["manifests"] = [desc.to_json()]
    _put(target, index["mediaType"], json.dumps(index).encode(), dest.replace(":", "-"))


def _misattached(registry: RegistryServer, sign: Callable[[str, str], object], layout: str, edit: bool) -> tuple[str, str, str]:
    """Sign one artifact, then attach that signature to a second one (rewritten to name it, with `edit`).
    Returns (second reference, its digest, the signed digest)."""
    repo = uuid.uuid4().hex[:10]
    signed_ref, signed_digest = _push(registry, repo, "signed")
    other_ref, other_digest = _push(registry, repo, "other")
    sign(signed_ref, signed_digest)
    target = _target(other_ref)
    (_move_bundle if layout == "bundle" else _move_legacy)(target, _repo_of(other_ref), signed_digest, other_digest, edit)
    return other_ref, other_digest, signed_digest


@pytest.mark.peer
@pytest.mark.parametrize("layout", ["bundle", "legacy"])
@pytest.mark.parametrize(("edit", "message"), [(False, "signature over another digest"), (True, "tampered payload")])
def test_moved_or_edited_signature_is_refused(
    wasm_oci: ToolRunner, registry: RegistryServer, our_keys: KeyPair, layout: str, edit: bool, message: str
) -> None:
    sign = lambda ref, _digest: signing.sign(ref, our_keys.load(), PLAIN, (layout,))  # noqa: E731
    other_ref, other_digest, signed_digest = _misattached(registry, sign, layout, edit)
    stderr = _refused_pull(wasm_oci, other_ref, our_keys.public, message)
    assert (our_keys.trusted().hint[:12] if edit else f"covers {signed_digest}, not {other_digest}") in stderr
    assert not _cosign_verify(our_keys, our_keys.public, other_ref, other_digest)[0]


@pytest.mark.peer
def test_tampered_cosign_legacy_payload_is_refused(wasm_oci: ToolRunner, registry: RegistryServer, cosign_keys: KeyPair) -> None:
    """cosign's legacy layers carry no key hint: the refusal says both possible causes."""
    sign = lambda ref, digest: _cosign_sign(cosign_keys, ref, digest, "legacy")  # noqa: E731
    other_ref, _, _ = _misattached(registry, sign, "legacy", edit=True)
    _refused_pull(wasm_oci, other_ref, cosign_keys.public, "signed by another key or altered")


def test_signature_altered_in_registry_storage_is_refused(wasm_oci: ToolRunner, registry: RegistryServer, our_keys: KeyPair) -> None:
    ref, _digest = _push(registry)
    signed = signing.sign(ref, our_keys.load(), PLAIN, ("bundle",))
    target = _target(ref)
    layer = Descriptor.from_json(json.loads(fetch_bytes(target, signed.attached[0].manifest, "referrer"))["layers"][0])
    stored = registry.blob_path(layer.digest)
    data = stored.read_bytes()
    stored.chmod(0o644)
    stored.write_bytes(data.replace(b'"sig":"M', b'"sig":"N', 1))
    _refused_pull(wasm_oci, ref, our_keys.public, "tampered")


# -- trust policy on pull -----------------------------------------------------------------------------


def _policy(wasm_oci: ToolRunner, doc: dict) -> None:
    path = wasm_oci.home / "data" / "policy.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def test_policy_enforce_warn_off_on_pull(wasm_oci: ToolRunner, registry: RegistryServer, our_keys: KeyPair) -> None:
    repo = uuid.uuid4().hex[:10]
    signed_ref, _ = _push(registry, repo, "signed")
    unsigned_ref, _ = _push(registry, repo, "unsigned")
    signing.sign(signed_ref, our_keys.load(), PLAIN, ("legacy",))
    scope = f"{registry.host}/signing/{repo}"
    store = wasm_oci.home / "data" / "store"

    _policy(wasm_oci, {"default": {"mode": "off"}, "rules": [{"scope": scope, "mode": "enforce", "keys": [str(our_keys.public)]}]})
    refused = wasm_oci("pull", unsigned_ref, "--plain-http", check=False)
    assert refused.returncode == 11 and "is not signed" in refused.stderr and f"rule {scope}" in refused.stderr
    assert not store.exists()
    assert "Verified: legacy signature" in wasm_oci("pull", signed_ref, "--plain-http").stderr

    _policy(wasm_oci, {"default": {"mode": "off"}, "rules": [{"scope": registry.host, "mode": "warn", "keys": [str(our_keys.public)]}]})
    warned = wasm_oci("pull", unsigned_ref, "--plain-http", "--format", "json")
    assert "warning:" in warned.stderr and "is not signed" in warned.stderr
    assert "is not signed" in json.loads(warned.stdout)["trust"]["warning"]

    _policy(wasm_oci, {"rules": [{"scope": "elsewhere.example", "mode": "off"}]})  # no default: what no rule covers is refused
    assert wasm_oci("pull", unsigned_ref, "--plain-http", check=False).returncode == 11
    # An explicit key always enforces, whatever the policy says.
    _policy(wasm_oci, {"default": {"mode": "off"}})
    assert wasm_oci("pull", unsigned_ref, "--plain-http", "--verify-key", our_keys.public, check=False).returncode == 11
    assert wasm_oci("pull", unsigned_ref, "--plain-http").returncode == 0


def test_no_policy_pulls_unsigned_and_broken_policy_fails_closed(wasm_oci: ToolRunner, registry: RegistryServer) -> None:
    ref, _ = _push(registry)
    assert "Verified" not in wasm_oci("pull", ref, "--plain-http").stderr
    _policy(wasm_oci, {"default": {"mode": "enforce"}, "rules": [{"scope": registry.host, "mode": "warn", "keys": ["missing.pub"]}]})
    broken = wasm_oci("pull", ref, "--plain-http", check=False)
    assert broken.returncode == 13 and "missing.pub: no such file" in broken.stderr


def test_check_policy_is_the_single_call_for_run_and_shim(registry: RegistryServer, our_keys: KeyPair, tmp_path: Path) -> None:
    ref, _ = _push(registry)
    signing.sign(ref, our_keys.load(), PLAIN, ("bundle",))
    (tmp_path / "policy.json").write_text(
        json.dumps({"rules": [{"scope": registry.host, "mode": "enforce", "keys": [str(our_keys.public)]}]})
    )
    policy = signing.load_policy(tmp_path / "policy.json")
    parsed = parse(ref)
    target = _target(ref)
    decision = signing.check_policy(parsed, target, target.resolve(parsed.reference), trust_policy=policy)
    assert decision.mode == "enforce" and [f.status for f in decision.verification.verified] == ["verified"]
