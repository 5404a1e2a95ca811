"""images / tag / rm / prune: the local store, managed the way container tools manage theirs."""

from __future__ import annotations

import click

from wasm_oci import api, paths
from wasm_oci.cli.common_options import output_format
from wasm_oci.cli.output import emit_json, human_size, printable
from wasm_oci.errors import NotFound


@click.command("images")
@output_format
def images_cmd(fmt: str) -> None:
    """List what the local store holds: each name, its manifest digest and size."""
    entries = api.images()
    if fmt == "json":
        emit_json([{"name": e.name, "digest": e.descriptor.digest, "mediaType": e.descriptor.media_type} for e in entries])
        return
    if not entries:
        click.echo(f"The local store ({paths.local_store()}) is empty.", err=True)
        return
    width = max(len(e.name) for e in entries)
    click.echo(f"{'NAME':<{width}}  DIGEST")
    for entry in entries:
        click.echo(printable(f"{entry.name:<{width}}  {entry.descriptor.digest}"))


@click.command("tag")
@click.argument("source")
@click.argument("name")
def tag_cmd(source: str, name: str) -> None:
    """Keep what SOURCE names (a store name, or a pulled registry reference) under NAME[:TAG] too."""
    desc = api.tag(source, name)
    click.echo(f"{name}@{desc.digest}")


@click.command("rm")
@click.argument("names", nargs=-1, required=True)
def rm_cmd(names: tuple[str, ...]) -> None:
    """Remove names from the local store; `prune` then frees the blobs nothing else names."""
    missing = []
    for name in names:
        try:
            click.echo(f"Removed {api.remove([name])[0]}", err=True)
        except NotFound:
            missing.append(name)
    if missing:
        raise NotFound(f"not in the local store: {', '.join(missing)}")


@click.command("prune")
def prune_cmd() -> None:
    """Free the blobs no name in the local store reaches (run it while no pull is running)."""
    count, size = api.prune()
    click.echo(f"Removed {count} blob(s), {human_size(size)}", err=True)
