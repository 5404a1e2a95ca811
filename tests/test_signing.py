"""Signing without a registry: key files (ours and cosign's, checked with the real cosign), the
secretbox under cosign's key format, the trust-policy file, and how found signatures are judged."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from services.tools import MissingToolError, ToolRunner
from wasm_oci.errors import KeyPasswordRequired, StoreError, TrustConfigError
from wasm_oci.oci.reference import parse
from wasm_oci.signing import keys, policy, secretbox, sigstore_bundle, simplesigning
from wasm_oci.signing import operations as signing
from wasm_oci.signing.discover import Candidate
from wasm_oci.signing.verify import check, judge

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def cosign(home: Path, password: str) -> ToolRunner:
    """The real cosign, with COSIGN_PASSWORD set and HOME kept in the test's dir."""
    try:
        return ToolRunner("cosign", home, {"COSIGN_PASSWORD": password})
    except MissingToolError as exc:
        pytest.fail(str(exc), pytrace=False)


# -- secretbox and key files ------------------------------------------------------------------


def test_secretbox_round_trip_and_rejects_alteration() -> None:
    key, nonce = os.urandom(32), os.urandom(24)
    for size in (0, 1, 63, 64, 65, 200):
        message = os.urandom(size)
        box = secretbox.seal(key, nonce, message)
        assert len(box) == size + secretbox.TAG_SIZE
        assert size == 0 or box[secretbox.TAG_SIZE :] != message
        assert secretbox.unseal(key, nonce, box) == message
    box = bytearray(secretbox.seal(key, nonce, b"private key bytes"))
    box[-1] ^= 1
    with pytest.raises(secretbox.SecretboxError):
        secretbox.unseal(key, nonce, bytes(box))
    with pytest.raises(secretbox.SecretboxError):
        secretbox.unseal(os.urandom(32), nonce, secretbox.seal(key, nonce, b"x"))


def test_reads_cosign_generated_key_pair(tmp_path: Path) -> None:
    cosign(tmp_path / "home", "s3cret")("generate-key-pair", cwd=tmp_path)
    private = keys.load_private(tmp_path / "cosign.key", "s3cret")
    public = keys.load_public(tmp_path / "cosign.pub")
    assert private.public().hint == public.hint
    assert public.verifies(private.sign(b"payload"), b"payload")
    assert not public.verifies(private.sign(b"payload"), b"other payload")
    with pytest.raises(TrustConfigError, match="wrong password"):
        keys.load_private(tmp_path / "cosign.key", "not it")
    with pytest.raises(KeyPasswordRequired, match="is encrypted"):
        keys.load_private(tmp_path / "cosign.key", None)
    with pytest.raises(TrustConfigError, match="that is a private key"):
        keys.load_public(tmp_path / "cosign.key")


def test_cosign_reads_our_key_files(tmp_path: Path) -> None:
    private_path, public_path = signing.keygen(tmp_path / "ours", "pa55")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert private_path.read_text().startswith(f"-----BEGIN {keys.SIGSTORE_LABEL}-----")
    cosign(tmp_path / "home", "pa55")("public-key", "--key", private_path, "--outfile", tmp_path / "seen-by-cosign.pub")
    assert keys.load_public(tmp_path / "seen-by-cosign.pub").hint == keys.load_public(public_path).hint
    assert cosign(tmp_path / "home", "nope")("public-key", "--key", private_path, check=False).returncode != 0


def test_keygen_without_password_and_no_overwrite(tmp_path: Path) -> None:
    private_path, _ = signing.keygen(tmp_path / "open", "")
    assert keys.load_private(private_path, None).public().hint == keys.load_public(tmp_path / "open.pub").hint
    with pytest.raises(StoreError, match="already exists"):
        signing.keygen(tmp_path / "open", "")
    signing.keygen(tmp_path / "open", "", force=True)


def test_rejects_keys_cosign_could_not_use(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    p384 = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "p384.pub").write_bytes(
        p384.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(TrustConfigError, match="only ECDSA P-256"):
        keys.load_public(tmp_path / "p384.pub")
    ed = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "ed.key").write_bytes(
        ed.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with pytest.raises(TrustConfigError, match="only ECDSA P-256"):
        keys.load_private(tmp_path / "ed.key", None)
    with pytest.raises(TrustConfigError, match="no such file"):
        keys.load_public(tmp_path / "missing.pub")


# -- judging signatures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def signer() -> keys.PrivateKey:
    return keys.generate("signer.key")


def _bundle_candidate(key: keys.PrivateKey, digest: str, edit: bytes | None = None) -> Candidate:
    envelope = sigstore_bundle.read(sigstore_bundle.build(key, digest))
    if edit is not None:  # swap the payload, keep signature and hint: what an attacker can do
        envelope = sigstore_bundle.Envelope(edit, envelope.payload_type, envelope.signatures, envelope.key_hint)
    try:
        claims = sigstore_bundle.claimed_digests(envelope)
        problem = None
    except ValueError as exc:
        claims, problem = (), str(exc)
    return Candidate(
        "bundle", "referrer sha256:" + "ee" * 32, envelope.signed_data, envelope.signatures, envelope.key_hint, claims, problem
    )


def _legacy_candidate(key: keys.PrivateKey, digest: str, hint: bool = True) -> Candidate:
    payload = simplesigning.payload("registry.test/app", digest)
    return Candidate(
        "legacy",
        "tag x.sig layer 1",
        payload,
        (key.sign(payload),),
        key.public().hint if hint else None,
        (simplesigning.claimed_digest(payload),),
    )


def test_judge_tells_each_outcome_apart(signer: keys.PrivateKey) -> None:
    trusted = [signer.public()]
    stranger = keys.generate("stranger.key")
    forged = json.dumps(
        {
            "_type": sigstore_bundle.STATEMENT_TYPES[0],
            "subject": [{"digest": {"sha256": OTHER[7:]}}],
            "predicateType": sigstore_bundle.PREDICATE,
            "predicate": {},
        }
    ).encode()
    cases = {
        "verified": _bundle_candidate(signer, DIGEST),
        "other-digest": _bundle_candidate(signer, OTHER),
        "tampered": _bundle_candidate(signer, DIGEST, edit=forged),
        "other-key": _bundle_candidate(stranger, DIGEST),
        "unverified": _legacy_candidate(stranger, DIGEST, hint=False),
    }
    for status, candidate in cases.items():
        finding = judge(candidate, DIGEST, trusted)
        assert finding.status == status, finding.detail
    assert judge(_legacy_candidate(signer, DIGEST), DIGEST, trusted).status == "verified"
    assert judge(_legacy_candidate(signer, DIGEST), DIGEST, []).status == "unchecked"
    assert "covers " + OTHER in judge(cases["other-digest"], DIGEST, trusted).detail


def test_verification_message_names_the_failure(signer: keys.PrivateKey) -> None:
    trusted = [signer.public()]
    assert "is not signed" in check("r/app", DIGEST, [], trusted).failure()
    message = check("r/app", DIGEST, [_bundle_candidate(keys.generate("x"), DIGEST), _bundle_candidate(signer, OTHER)], trusted).failure()
    assert message.index("signature over another digest") < message.index("signed by another key")
    assert check("r/app", DIGEST, [_bundle_candidate(signer, OTHER), _legacy_candidate(signer, DIGEST)], trusted).failure() is None


def test_attestations_are_not_signatures(signer: keys.PrivateKey) -> None:
    statement = json.dumps(
        {
            "_type": sigstore_bundle.STATEMENT_TYPES[0],
            "subject": [{"digest": {"sha256": DIGEST[7:]}}],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {},
        }
    ).encode()
    envelope = sigstore_bundle.Envelope(
        statement, sigstore_bundle.IN_TOTO, (signer.sign(sigstore_bundle.pae(sigstore_bundle.IN_TOTO, statement)),), signer.public().hint
    )
    with pytest.raises(ValueError, match="not a cosign signature"):
        sigstore_bundle.claimed_digests(envelope)


# -- trust policy -------------------------------------------------------------------------------


def _write_policy(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    return path


def test_policy_longest_scope_wins_on_whole_components(tmp_path: Path, signer: keys.PrivateKey) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "acme.pub").write_bytes(signer.public().pem())
    loaded = policy.load(
        _write_policy(
            tmp_path,
            {
                "default": {"mode": "warn"},
                "rules": [
                    {"scope": "reg.example", "mode": "off"},
                    {"scope": "reg.example/acme", "mode": "enforce", "keys": ["keys/acme.pub"]},
                ],
            },
        )
    )
    rule = loaded.rule_for(parse("reg.example/acme/app:1"))
    assert (rule.scope, rule.mode, [k.hint for k in rule.keys]) == ("reg.example/acme", "enforce", [signer.public().hint])
    assert loaded.rule_for(parse("reg.example/acmecorp/app:1")).mode == "off"
    assert loaded.rule_for(parse("other.example/x")).mode == "warn"
    assert loaded.rule_for(parse("oci:/tmp/layout:1")).mode == "off"


def test_policy_fails_closed(tmp_path: Path) -> None:
    assert policy.load(_write_policy(tmp_path, {"rules": []})).rule_for(parse("reg.example/x")).mode == "enforce"
    for doc, message in [
        ({"rules": [{"scope": "r.example", "mode": "strict"}]}, "mode must be"),
        ({"rules": [{"mode": "off"}]}, "needs a scope"),
        ({"rules": [{"scope": "r.example", "mode": "enforce", "keys": ["absent.pub"]}]}, "no such file"),
        ({"rules": [{"scope": "r.example", "mode": "off", "key": "a.pub"}]}, "unknown field"),
        ({"defaults": {}}, "a policy is an object"),
    ]:
        with pytest.raises(TrustConfigError, match=message):
            policy.load(_write_policy(tmp_path, doc))
    (tmp_path / "policy.json").write_text("{not json")
    with pytest.raises(TrustConfigError, match="not valid JSON"):
        policy.load(tmp_path / "policy.json")


def test_policy_location_and_documented_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WASM_OCI_POLICY", raising=False)
    monkeypatch.setenv("WASM_OCI_HOME", str(tmp_path))
    assert policy.load() is policy.NO_POLICY and policy.NO_POLICY.default.mode == "off"
    _write_policy(tmp_path, {"default": {"mode": "warn"}})
    assert policy.load().default.mode == "warn"
    monkeypatch.setenv("WASM_OCI_POLICY", str(tmp_path / "elsewhere.json"))
    with pytest.raises(TrustConfigError, match="does not exist"):
        policy.load()
