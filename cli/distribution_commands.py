"""package / push / pull / inspect / copy / login / logout."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from wasm_oci import api
from wasm_oci.cli.common_options import build_registry_options, output_format, registry_options
from wasm_oci.cli.output import ProgressLine, emit_json, human_size, printable
from wasm_oci.cli.signing_commands import report_signed, report_trust, sign_key_option, signature_lines, verify_key_option
from wasm_oci.oci.artifact import WasmArtifact
from wasm_oci.oci.package import TRIGGERS
from wasm_oci.wasm_file import names_wasm_file

if TYPE_CHECKING:
    from wasm_oci.signing.attach import Attached
    from wasm_oci.signing.trust import Decision


FORMATS = click.Choice(["image", "artifact"])
FORMAT_HELP = "image: OCI image config that containerd runs; artifact: CNCF Wasm artifact config."
TRIGGER_HELP = (
    "command: run it once; http: serve it as an HTTP function: the shim answers each request with a fresh instance, "
    "CGI-style, see docs/shim.md."
)


def _parse_created(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        if value.isdigit():
            return datetime.fromtimestamp(int(value), UTC)
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither RFC 3339 (2024-01-02T03:04:05Z) nor Unix seconds") from None


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{what} {item!r} must be KEY=VALUE")
        out[key] = value
    return out


def package_options(func: Any) -> Any:
    """Packaging settings shared by `package` and `push FILE.wasm` (which names the format --package-format)."""
    for option in reversed(
        [
            click.option(
                "--created", callback=_parse_created, help="Creation time (RFC 3339 or Unix seconds); default SOURCE_DATE_EPOCH, else now."
            ),
            click.option("--author", help="Author recorded in the config."),
            click.option("--env", "envs", multiple=True, metavar="KEY=VALUE", help="Default environment (image format)."),
            click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Config label (image format)."),
            click.option("--annotation", "annotations", multiple=True, metavar="KEY=VALUE", help="Manifest annotation."),
            click.option("--trigger", type=click.Choice(TRIGGERS), default="command", show_default=True, help=TRIGGER_HELP),
        ]
    ):
        func = option(func)
    return func


def _package_opts(
    pkg_format: str,
    created: datetime | None,
    author: str | None,
    envs: tuple[str, ...],
    labels: tuple[str, ...],
    annotations: tuple[str, ...],
    trigger: str,
    **_: Any,
) -> api.PackageOptions:
    _pairs(envs, "--env")
    return api.PackageOptions(
        format=pkg_format,  # type: ignore[arg-type]
        created=created,
        author=author,
        env=envs,
        labels=_pairs(labels, "--label"),
        annotations=_pairs(annotations, "--annotation"),
        trigger=trigger,  # type: ignore[arg-type]
    )


def _report(result: api.Result, fmt: str, verb: str) -> None:
    if fmt == "json":
        emit_json(result.to_json())
        return
    if result.stats and (result.stats.blobs_copied or result.stats.blobs_skipped):
        click.echo(
            f"{verb}: {result.stats.blobs_copied} blob(s) transferred ({human_size(result.stats.bytes_copied)}), "
            f"{result.stats.blobs_skipped} already present",
            err=True,
        )
    if result.output:
        click.echo(f"Wrote {result.output}", err=True)
    click.echo(result.reference)


@click.command("package")
@click.argument("wasm", type=click.Path(path_type=Path))
@click.option(
    "-t", "--tag", "dest", default=None, help="Where to store it: a local-store NAME[:TAG] (default: file name) or oci:PATH[:TAG]."
)
@click.option("--package-format", "pkg_format", type=FORMATS, default="image", show_default=True, help=FORMAT_HELP)
@package_options
@output_format
def package_cmd(wasm: Path, dest: str | None, fmt: str, **kwargs: Any) -> None:
    """Package a .wasm component or module as an OCI artifact in a local store."""
    result = api.package(wasm, dest or wasm.stem.lower().replace("_", "-") + ":latest", _package_opts(**kwargs))
    _report(result, fmt, "package")


@click.command("push")
@click.argument("source")
@click.argument("dest")
@registry_options
@click.option("--package-format", "pkg_format", type=FORMATS, default="image", show_default=True, help=FORMAT_HELP)
@package_options
@sign_key_option
@output_format
def push_cmd(source: str, dest: str, fmt: str, sign_key: Any, **kwargs: Any) -> None:
    """Push SOURCE (a .wasm file or a reference) to DEST; prints the manifest digest reference."""
    options = build_registry_options(**kwargs)
    result = api.push(source, dest, options, options, ProgressLine("push"), _package_opts(**kwargs), sign_key)
    if result.signatures and fmt != "json":
        report_signed(result.descriptor.digest, cast("tuple[Attached, ...]", result.signatures))  # what api.push attaches
    _report(result, fmt, "push")


@click.command("pull")
@click.argument("ref")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Write just the wasm to this file (or directory) instead of the local store."
)
@registry_options
@verify_key_option
@output_format
def pull_cmd(ref: str, output: Path | None, fmt: str, verify_keys: Any, **kwargs: Any) -> None:
    """Pull REF into the local store (or its wasm into -o), verifying every blob's digest."""
    result = api.pull(ref, build_registry_options(**kwargs), output, ProgressLine("pull"), verify_keys)
    report_trust(cast("Decision | None", result.trust), verbose=fmt != "json")  # what api.pull decides
    _report(result, fmt, "pull")


@click.command("copy")
@click.argument("source")
@click.argument("dest")
@registry_options
@output_format
def copy_cmd(source: str, dest: str, fmt: str, **kwargs: Any) -> None:
    """Copy an artifact with all its blobs between registries and layouts; the digest is unchanged."""
    options = build_registry_options(**kwargs)
    result = api.copy(source, dest, options, options, ProgressLine("copy"))
    _report(result, fmt, "copy")


def _artifact_json(ref: str, art: WasmArtifact) -> dict[str, Any]:
    return {
        "reference": ref,
        "digest": art.manifest.digest,
        "format": art.format,
        "mediaType": art.manifest.media_type,
        "os": art.os,
        "architecture": art.architecture,
        "created": art.created,
        "size": art.total_size,
        "manifest": art.manifest_json,
        "config": {"descriptor": art.config.to_json(), "content": art.config_json},
        "layer": art.layer.to_json(),
        "world": {"target": art.target, "imports": list(art.imports), "exports": list(art.exports)},
        "entrypoint": list(art.entrypoint),
        "trigger": art.trigger,
    }


@click.command("inspect")
@click.argument("ref")
@registry_options
@verify_key_option
@output_format
def inspect_cmd(ref: str, fmt: str, verify_keys: Any, **kwargs: Any) -> None:
    """Show an artifact's manifest, config, world, sizes and signatures (checked with --verify-key
    or the policy's keys). REF may be a .wasm file (packaged in memory, as push would)."""
    from wasm_oci.signing import operations as signing  # cryptography costs ~15 ms to import

    options = build_registry_options(**kwargs)
    art = api.inspect(ref, options)
    # A file has no signatures; offline, the registry that holds them is out of reach.
    signatures = None if names_wasm_file(ref) or options.offline else signing.signatures(ref, verify_keys, options)
    if fmt == "json":
        emit_json({**_artifact_json(ref, art), "signatures": [f.to_json() for f in signatures.findings] if signatures else None})
        return
    lines = [
        f"Reference:    {ref}",
        f"Digest:       {art.manifest.digest}",
        f"Format:       {art.format} (config {art.config.media_type})",
        f"Platform:     {art.os or '?'}/{art.architecture or '?'}",
        f"Created:      {art.created or '-'}",
        f"Size:         {human_size(art.total_size)} (manifest {art.manifest.size} B, config {art.config.size} B)",
        f"Layer:        {art.layer.media_type} {art.layer.digest} {human_size(art.layer.size)}",
    ]
    if art.entrypoint:
        lines.append(f"Entrypoint:   {' '.join(art.entrypoint)}")
    lines.append(f"Trigger:      {art.trigger}")
    lines.append(f"World target: {art.target or '-'}")
    lines += [f"  import {name}" for name in art.imports]
    lines += [f"  export {name}" for name in art.exports]
    lines += (
        signature_lines(signatures)
        if signatures
        else ["Signatures:   not looked up (" + ("a file)" if not options.offline else "--offline)")]
    )
    click.echo("\n".join(printable(line) for line in lines))


@click.command("login")
@click.argument("registry")
@registry_options
def login_cmd(registry: str, **kwargs: Any) -> None:
    """Check credentials for REGISTRY and save them in the Docker config."""
    options = build_registry_options(**kwargs)
    username = options.username or click.prompt("Username")
    password = options.password if options.password is not None else click.prompt("Password", hide_input=True)
    api.login(registry, username, password, options)
    click.echo(f"Login succeeded: {registry}", err=True)


@click.command("logout")
@click.argument("registry")
def logout_cmd(registry: str) -> None:
    """Remove saved credentials for REGISTRY."""
    if api.logout(registry):
        click.echo(f"Removed credentials for {registry}", err=True)
    else:
        click.echo(f"Not logged in to {registry}", err=True)
    sys.stdout.flush()
