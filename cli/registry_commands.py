"""tags: what a registry holds, listed."""

from __future__ import annotations

from typing import Any

import click

from wasm_oci import api
from wasm_oci.cli.common_options import build_registry_options, output_format, registry_options
from wasm_oci.cli.output import emit_json, printable


@click.command("tags")
@click.argument("repository")
@registry_options
@output_format
def tags_cmd(repository: str, fmt: str, **kwargs: Any) -> None:
    """List the tags of REPOSITORY (HOST[:PORT]/REPO, no tag or digest), one per line, in the
    registry's order; every page of the listing is followed."""
    found = api.tags(repository, build_registry_options(**kwargs))  # oras-py is imported here, by api.tags, only
    if fmt == "json":
        emit_json({"repository": repository, "tags": found})
    elif found:
        click.echo("\n".join(printable(tag) for tag in found))
