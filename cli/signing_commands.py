"""keygen / sign / verify, and the signing options and report lines that push, pull and inspect share.

Signing modules are imported inside the commands: cryptography costs ~15 ms at every start otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from wasm_oci.cli.common_options import build_registry_options, output_format, registry_options
from wasm_oci.cli.output import emit_json, printable
from wasm_oci.errors import KeyPasswordRequired

if TYPE_CHECKING:
    from wasm_oci.signing.attach import Attached
    from wasm_oci.signing.keys import PrivateKey, PublicKey
    from wasm_oci.signing.trust import Decision
    from wasm_oci.signing.verify import Verification

KEY_PATH = click.Path(dir_okay=False, path_type=Path)
PASSWORD_HELP = "Password: $WASM_OCI_KEY_PASSWORD, else $COSIGN_PASSWORD, else a prompt on a terminal."


def read_private_key(path: Path) -> PrivateKey:
    from wasm_oci.signing import keys

    try:
        return keys.load_private(path, keys.password_from_env())
    except KeyPasswordRequired:
        if not sys.stdin.isatty():
            raise
        return keys.load_private(path, click.prompt(f"Password for {path}", hide_input=True, default="", show_default=False))


def _private_key(_ctx: click.Context, _param: click.Parameter, value: Path | None) -> PrivateKey | None:
    return read_private_key(value) if value else None


def _public_keys(_ctx: click.Context, _param: click.Parameter, values: tuple[Path, ...]) -> tuple[PublicKey, ...]:
    if not values:
        return ()  # no import: cryptography would cost every run, pull and inspect ~20 ms
    from wasm_oci.signing import keys

    return tuple(keys.load_public(path) for path in values)


sign_key_option = click.option(
    "--sign-key",
    type=KEY_PATH,
    callback=_private_key,
    help="Sign the pushed manifest with this private key, in both cosign layouts. " + PASSWORD_HELP,
)
verify_key_option = click.option(
    "--verify-key",
    "verify_keys",
    type=KEY_PATH,
    multiple=True,
    callback=_public_keys,
    help="Require a signature by this public key (repeatable); overrides the trust policy.",
)


def report_signed(digest: str, attached: tuple[Attached, ...]) -> None:
    where = ", ".join(f"{a.layout} ({a.where})" for a in attached)
    click.echo(f"Signed {digest}: {where}", err=True)


def report_trust(decision: Decision | None, verbose: bool) -> None:
    """A warn-mode warning always goes to stderr (also with --format json); the verified lines only when verbose."""
    if decision is None or decision.verification is None:
        return
    if decision.warning:
        click.echo(printable(f"wasm-oci: warning: {decision.warning} (trust policy mode warn: {decision.source})"), err=True)
    for finding in decision.verification.verified if verbose else ():
        click.echo(printable(f"Verified: {finding.detail}"), err=True)


def signature_lines(verification: Verification) -> list[str]:
    lines = [f"Signatures:   {len(verification.findings)}"]
    for finding in verification.findings:
        lines.append(f"  {finding.candidate.layout:<7} {finding.status:<12} {finding.candidate.location}")
        if finding.status != "unchecked":
            lines.append(f"          {finding.detail}")
        elif finding.candidate.key_hint:
            lines.append(f"          key hint {finding.candidate.key_hint}")
    return [printable(line) for line in lines]


@click.command("keygen")
@click.option("--output-key-prefix", "prefix", default="wasm-oci", show_default=True, help="Writes PREFIX.key and PREFIX.pub.")
@click.option("--no-password", is_flag=True, help="Empty password (cosign's format still; readable with COSIGN_PASSWORD='').")
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
def keygen_cmd(prefix: str, no_password: bool, force: bool) -> None:
    """Create an ECDSA P-256 key pair; the private key is in cosign's encrypted format."""
    from wasm_oci.signing import keys
    from wasm_oci.signing import operations as signing

    password = "" if no_password else keys.password_from_env()
    if password is None:
        if not sys.stdin.isatty():
            raise click.UsageError("no password: set WASM_OCI_KEY_PASSWORD (or COSIGN_PASSWORD), or pass --no-password")
        password = click.prompt("Password for the private key", hide_input=True, confirmation_prompt=True, default="", show_default=False)
    private, public = signing.keygen(Path(prefix), password, force)
    click.echo(f"Private key written to {private}", err=True)
    click.echo(f"Public key written to {public}", err=True)
    click.echo(public)  # stdout: the path scripts pass on to --verify-key


@click.command("sign")
@click.argument("ref")
@click.option("--sign-key", "--key", "key", type=KEY_PATH, required=True, callback=_private_key, help="Private key. " + PASSWORD_HELP)
@click.option(
    "--signature-format",
    type=click.Choice(["both", "bundle", "legacy"]),
    default="both",
    show_default=True,
    help="bundle: sigstore bundle referrer (cosign 3's default); legacy: the sha256-<hex>.sig tag (what cosign 2 reads).",
)
@registry_options
@output_format
def sign_cmd(ref: str, key: PrivateKey, signature_format: str, fmt: str, **kwargs: Any) -> None:
    """Sign the manifest REF points to; cosign verifies the result."""
    from wasm_oci.signing import operations as signing

    layouts = signing.LAYOUTS if signature_format == "both" else (signature_format,)
    result = signing.sign(ref, key, build_registry_options(**kwargs), layouts)  # type: ignore[arg-type]
    if fmt == "json":
        emit_json(result.to_json())
        return
    report_signed(result.digest, result.attached)
    click.echo(result.reference)


@click.command("verify")
@click.argument("ref")
@click.option(
    "--verify-key",
    "--key",
    "trusted",
    type=KEY_PATH,
    multiple=True,
    callback=_public_keys,
    help="Trusted public key (repeatable); default: the trust policy's keys for REF.",
)
@registry_options
@output_format
def verify_cmd(ref: str, trusted: tuple[PublicKey, ...], fmt: str, **kwargs: Any) -> None:
    """Check that REF carries a valid signature by a trusted key, in either cosign layout."""
    from wasm_oci.signing import operations as signing

    verification = signing.verify(ref, trusted, build_registry_options(**kwargs))
    if fmt == "json":
        emit_json(
            {"reference": verification.reference, "digest": verification.digest, "signatures": [f.to_json() for f in verification.findings]}
        )
        return
    for finding in verification.verified:
        click.echo(printable(f"Verified: {finding.detail}"), err=True)
    click.echo(f"{verification.reference}@{verification.digest}")
