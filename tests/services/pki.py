"""A throwaway test CA (cryptography package) and bcrypt htpasswd lines.

The CA signs a TLS server cert for 127.0.0.1/localhost (IP SANs: Go clients ignore the CN)
and the token server's JWT signing cert. Keys are ECDSA P-256: fast to generate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("localhost",)
LOOPBACK_IPS = ("127.0.0.1", "::1")


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass(frozen=True)
class IssuedCert:
    """A leaf certificate and its key, in memory and as PEM files."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class TestCA:
    """A self-signed root CA written to `<dir>/ca.pem`."""

    __test__ = False  # not a pytest test class

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path

    @classmethod
    def create(cls, directory: Path, name: str = "wasm-oci test CA") -> TestCA:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert=cert, key=key, cert_path=_write_cert(cert, directory / "ca.pem"))

    def issue(
        self,
        directory: Path,
        stem: str,
        common_name: str,
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = (),
        server: bool = True,
    ) -> IssuedCert:
        """Sign a leaf cert: a TLS server cert (SANs) or, with server=False, a signing cert."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server:
            sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
            sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        directory.mkdir(parents=True, exist_ok=True)
        return IssuedCert(
            cert=cert,
            key=key,
            cert_path=_write_cert(cert, directory / f"{stem}.pem"),
            key_path=_write_key(key, directory / f"{stem}-key.pem"),
        )

    def issue_loopback_server(self, directory: Path, stem: str = "server") -> IssuedCert:
        """A TLS server cert valid for localhost, 127.0.0.1 and ::1."""
        return self.issue(directory, stem, "localhost", LOOPBACK_NAMES, LOOPBACK_IPS)


def bcrypt_hash(password: str, cost: int = 4) -> str:
    """A bcrypt hash for htpasswd (the only scheme distribution accepts).

    Low cost on purpose: the registry checks the hash on every request. Uses libxcrypt through
    the stdlib `crypt` module (Python <= 3.12), else the PyPI `bcrypt` package if installed.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2**cost))
        if hashed and hashed.startswith("$2"):
            return hashed
    except ImportError:
        pass
    try:
        import bcrypt  # type: ignore[import-not-found]
    except ImportError as exc:
        raise RuntimeError("no bcrypt implementation: Python's crypt module lacks blowfish here; `pip install bcrypt`") from exc
    return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode())


def random_secret(nbytes: int = 12) -> str:
    """A URL-safe random password or secret."""
    return secrets.token_urlsafe(nbytes)
