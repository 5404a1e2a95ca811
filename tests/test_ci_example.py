"""The CI example's steps, run for real against a local registry, and its CLI usage kept valid."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click

from services.registry import RegistryServer
from services.tools import ToolRunner
from services.wasmgen import HELLO
from wasm_oci.cli.main import cli

WORKFLOW = Path(__file__).resolve().parents[1] / "examples" / "ci" / "wasm-oci.yml"


def _invocations() -> list[list[str]]:
    found = []
    for line in WORKFLOW.read_text().splitlines():
        match = re.search(r"\bwasm-oci (\w.*?)(?:\s*[>|]|$)", line)
        if match and not line.lstrip().startswith("#") and "pip install" not in line:
            found.append(shlex.split(match.group(1).replace('"', "")))
    return found


def test_workflow_uses_only_real_commands_and_flags() -> None:
    invocations = _invocations()
    assert {args[0] for args in invocations} == {"login", "push", "inspect", "copy"}
    context = click.Context(cli)
    for args in invocations:
        command = cli.get_command(context, args[0])
        assert command is not None, args
        known = {opt for param in command.params for opt in getattr(param, "opts", [])}
        used = {word for word in args[1:] if word.startswith("-")}
        assert used <= known, (args, used - known)


def test_package_push_promote_by_digest(wasm_oci: ToolRunner, registry: RegistryServer) -> None:
    staging, production = f"{registry.host}/ci/staging/hello", f"{registry.host}/ci/hello"
    wasm_oci.env["SOURCE_DATE_EPOCH"] = "1700000000"
    first = json.loads(wasm_oci("push", HELLO, f"{staging}:abc123", "--plain-http", "--format", "json").stdout)
    rerun = json.loads(wasm_oci("push", HELLO, f"{staging}:abc123-rerun", "--plain-http", "--format", "json").stdout)
    assert rerun["digest"] == first["digest"], "same commit, same digest"
    promoted = json.loads(
        wasm_oci("copy", f"{staging}@{first['digest']}", f"{production}:latest", "--plain-http", "--format", "json").stdout
    )
    assert promoted["digest"] == first["digest"]
    assert promoted["reference"] == f"{production}:latest@{first['digest']}"
