"""ECDSA P-256 keys in the files cosign reads and writes.

Private keys: cosign's `ENCRYPTED SIGSTORE PRIVATE KEY` PEM (scrypt + NaCl secretbox around
PKCS#8; what `cosign generate-key-pair` writes and the only private-key form `cosign sign --key`
reads), its older `ENCRYPTED COSIGN PRIVATE KEY` label, and plain or encrypted PKCS#8/SEC1 PEM
as openssl writes them. Public keys: SubjectPublicKeyInfo PEM. P-256 with SHA-256 is cosign's
default and the only kind accepted, so a key that works here works with cosign.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from wasm_oci.errors import KeyPasswordRequired, TrustConfigError
from wasm_oci.signing import secretbox

SIGSTORE_LABEL = "ENCRYPTED SIGSTORE PRIVATE KEY"
_COSIGN_LABELS = (SIGSTORE_LABEL, "ENCRYPTED COSIGN PRIVATE KEY")
_SCRYPT_PARAMS = {"N": 65536, "r": 8, "p": 1}  # cosign's; ~0.15 s per derivation
SCRYPT_MAX_MEMORY = 256 << 20
"""scrypt needs 128 * r * N bytes: cosign's parameters take 64 MiB."""
SCRYPT_MAX_WORK = 1 << 22
"""N * r * p: 8x cosign's, ~1 s here. A key file is input too: its parameters cannot buy
minutes of CPU or gigabytes of memory."""
MAX_KEY_FILE = 1 << 20
PASSWORD_ENV = ("WASM_OCI_KEY_PASSWORD", "COSIGN_PASSWORD")
_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.S)


@dataclass(frozen=True)
class PublicKey:
    key: ec.EllipticCurvePublicKey
    name: str  # where it came from, for messages

    @property
    def hint(self) -> str:
        """sigstore's `publicKey.hint`: base64 SHA-256 of the DER SubjectPublicKeyInfo."""
        der = self.key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(hashlib.sha256(der).digest()).decode()

    def verifies(self, signature: bytes, data: bytes) -> bool:
        try:
            self.key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True

    def pem(self) -> bytes:
        return self.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def __str__(self) -> str:
        return f"{self.name} ({self.hint[:12]})"


@dataclass(frozen=True)
class PrivateKey:
    key: ec.EllipticCurvePrivateKey
    name: str

    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key(), self.name)

    def sign(self, data: bytes) -> bytes:
        """ASN.1 DER ECDSA over SHA-256(data), the encoding cosign and DSSE use."""
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))

    def to_pem(self, password: str) -> bytes:
        """cosign's encrypted PEM; an empty password is allowed, as with `cosign generate-key-pair`."""
        pkcs8 = self.key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        salt, nonce = os.urandom(32), os.urandom(secretbox.NONCE_SIZE)
        doc = {
            "kdf": {"name": "scrypt", "params": _SCRYPT_PARAMS, "salt": _b64(salt)},
            "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
            "ciphertext": _b64(secretbox.seal(_derive(password, salt, _SCRYPT_PARAMS), nonce, pkcs8)),
        }
        body = base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        return "\n".join([f"-----BEGIN {SIGSTORE_LABEL}-----", *lines, f"-----END {SIGSTORE_LABEL}-----", ""]).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _derive(password: str, salt: bytes, params: dict[str, Any]) -> bytes:
    return Scrypt(salt=salt, length=secretbox.KEY_SIZE, n=params["N"], r=params["r"], p=params["p"]).derive(password.encode())


def _scrypt_params(params: Any, path: Path) -> dict[str, int]:
    """The file's scrypt parameters, refused past the caps before any work is done."""
    if not isinstance(params, dict) or not all(isinstance(params.get(k), int) and not isinstance(params.get(k), bool) for k in "Nrp"):
        raise TrustConfigError(f"{path}: scrypt parameters N, r and p must be integers")
    n, r, p = params["N"], params["r"], params["p"]
    if n < 2 or n & (n - 1) or r < 1 or p < 1:
        raise TrustConfigError(f"{path}: invalid scrypt parameters N={n} r={r} p={p}")
    if 128 * r * n > SCRYPT_MAX_MEMORY or n * r * p > SCRYPT_MAX_WORK:
        raise TrustConfigError(f"{path}: scrypt parameters N={n} r={r} p={p} are over this tool's limits (cosign writes N=65536 r=8 p=1)")
    return {"N": n, "r": r, "p": p}


def generate(name: str = "new key") -> PrivateKey:
    return PrivateKey(ec.generate_private_key(ec.SECP256R1()), name)


def password_from_env() -> str | None:
    """WASM_OCI_KEY_PASSWORD, else COSIGN_PASSWORD (so cosign users' scripts work unchanged); set-but-empty counts."""
    for var in PASSWORD_ENV:
        if var in os.environ:
            return os.environ[var]
    return None


def _read(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise TrustConfigError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise TrustConfigError(f"cannot read {what} {str(path)[:200]}: {exc.strerror}") from None
    except ValueError:  # a NUL in the path
        raise TrustConfigError(f"{what} path {str(path)[:200]!r} is not a file name") from None
    if len(data) > MAX_KEY_FILE:
        raise TrustConfigError(f"{what} {path} is over {MAX_KEY_FILE} bytes: not a key file")
    return data


def _p256(key: Any, path: Path) -> Any:
    curve = getattr(key, "curve", None)
    if not isinstance(curve, ec.SECP256R1):
        kind = f"ECDSA {curve.name}" if curve else type(key).__name__
        raise TrustConfigError(f"{path}: only ECDSA P-256 keys are supported (cosign's kind), this is {kind}")
    return key


def load_public(path: Path) -> PublicKey:
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        hint = " (that is a private key: pass the .pub file)" if b"PRIVATE KEY-----" in data else ""
        raise TrustConfigError(f"{path} is not a PEM public key{hint}") from None
    return PublicKey(_p256(key, path), str(path))


def _needs_password(path: Path) -> KeyPasswordRequired:
    return KeyPasswordRequired(f"{path} is encrypted: set WASM_OCI_KEY_PASSWORD (or COSIGN_PASSWORD)")


def _open_cosign(body: str, password: str | None, path: Path) -> bytes:
    try:
        doc = json.loads(base64.b64decode(body))
        kdf, cipher = doc["kdf"], doc["cipher"]
        if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
            raise TrustConfigError(f"{path}: unsupported key encryption {kdf['name']}/{cipher['name']}")
        params = _scrypt_params(kdf["params"], path)
        nonce = base64.b64decode(cipher["nonce"], validate=True)
        if len(nonce) != secretbox.NONCE_SIZE:
            raise ValueError("nonce size")
        key = _derive(password or "", base64.b64decode(kdf["salt"], validate=True), params)
        return secretbox.unseal(key, nonce, base64.b64decode(doc["ciphertext"], validate=True))
    except secretbox.SecretboxError:
        raise (_needs_password(path) if password is None else TrustConfigError(f"{path}: wrong password for this private key")) from None
    except (ValueError, KeyError, TypeError, RecursionError):
        raise TrustConfigError(f"{path}: malformed {SIGSTORE_LABEL} file") from None


def load_private(path: Path, password: str | None) -> PrivateKey:
    """Load a private key; `password=None` means none was given, and only an empty one is tried."""
    data = _read(path, "private key").decode(errors="replace")
    match = _PEM.search(data)
    if not match or "PRIVATE KEY" not in match.group(1):
        raise TrustConfigError(f"{path} is not a PEM private key")
    label, body = match.group(1), match.group(2)
    try:
        if label in _COSIGN_LABELS:
            key = serialization.load_der_private_key(_open_cosign(body, password, path), None)
        else:
            encrypted = label.startswith("ENCRYPTED") or "Proc-Type: 4,ENCRYPTED" in body
            if encrypted and password is None:
                raise _needs_password(path)
            key = serialization.load_pem_private_key(match.group(0).encode(), password.encode() if encrypted and password else None)
    except (ValueError, TypeError) as exc:
        raise TrustConfigError(f"{path}: cannot load private key ({str(exc).splitlines()[0][:120]})") from None
    return PrivateKey(_p256(key, path), str(path))
