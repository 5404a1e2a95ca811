"""Interop with the tools users already run: the Go oras CLI, crane and containerd's ctr."""

from __future__ import annotations

import json
from pathlib import Path

from services.containerd import ContainerdServer
from services.registry import RegistryServer
from services.tools import ToolRunner
from services.wasmgen import HELLO, MODULE
from wasm_oci.oci import distribution as api
from wasm_oci.oci.options import RegistryOptions

PLAIN = RegistryOptions(plain_http=True)


def test_oras_pulls_what_we_push_byte_identical(private_home: Path, registry: RegistryServer, oras_cli: ToolRunner, tmp_path: Path) -> None:
    ref = f"{registry.host}/interop/ours:1"
    pushed = api.push(str(HELLO), ref, PLAIN, PLAIN).descriptor
    assert oras_cli("resolve", "--plain-http", ref).stdout.strip() == pushed.digest
    manifest = oras_cli("manifest", "fetch", "--plain-http", ref).stdout.encode()
    _, ours = api.package_file(HELLO)  # the wasm bytes as read from disk
    out = tmp_path / "oras-out"
    oras_cli("pull", "--plain-http", ref, "-o", out)
    assert (out / "hello.wasm").read_bytes() == ours
    layer = json.loads(manifest)["layers"][0]["digest"]
    blob = tmp_path / "blob"
    oras_cli("blob", "fetch", "--plain-http", f"{ref.split(':1', maxsplit=1)[0]}@{layer}", "--output", blob)
    assert blob.read_bytes() == HELLO.read_bytes()


def test_we_pull_what_oras_pushes(private_home: Path, registry: RegistryServer, oras_cli: ToolRunner, tmp_path: Path) -> None:
    ref = f"{registry.host}/interop/theirs:1"
    oras_cli("push", "--plain-http", ref, "hello-module.wasm:application/wasm", cwd=MODULE.parent)
    digest = oras_cli("resolve", "--plain-http", ref).stdout.strip()
    out = tmp_path / "m.wasm"
    result = api.pull(ref, PLAIN, out)
    assert result.descriptor.digest == digest
    assert out.read_bytes() == MODULE.read_bytes()
    art = api.inspect(ref, PLAIN)
    assert art.format == "oras-artifact" and art.layer.media_type == "application/wasm"


def test_oras_copy_and_our_copy_agree_on_digests(
    private_home: Path, registry: RegistryServer, oras_cli: ToolRunner, crane_cli: ToolRunner, tmp_path: Path
) -> None:
    ref = f"{registry.host}/interop/copy:1"
    digest = api.push(str(HELLO), ref, PLAIN, PLAIN, package_options=api.PackageOptions(format="artifact")).descriptor.digest
    oras_cli("copy", "--from-plain-http", "--to-plain-http", ref, f"{registry.host}/interop/oras-copied:1")
    api.copy(f"{registry.host}/interop/oras-copied:1", f"oci:{tmp_path}/layout:1", PLAIN, PLAIN)
    again = api.copy(f"oci:{tmp_path}/layout:1", f"{registry.host}/interop/back:1", PLAIN, PLAIN)
    assert again.descriptor.digest == digest
    assert crane_cli("digest", "--insecure", f"{registry.host}/interop/back:1").stdout.strip() == digest
    # oras reads the layout we wrote.
    assert oras_cli("resolve", "--oci-layout", f"{tmp_path}/layout:1").stdout.strip() == digest


def test_containerd_pulls_and_accepts_our_runnable_image(
    private_home: Path, registry: RegistryServer, containerd: ContainerdServer
) -> None:
    ref = f"{registry.host}/interop/ctr:1"
    digest = api.push(str(HELLO), ref, PLAIN, PLAIN).descriptor.digest
    containerd.ctr("images", "pull", *registry.ctr_pull_flags(), ref)
    listed = containerd.ctr("images", "ls").stdout
    assert ref in listed and digest in listed
    check = containerd.ctr("images", "check").stdout
    assert any(ref in line and "complete" in line for line in check.splitlines()), check
    assert api.inspect(ref, PLAIN).layer.digest in containerd.ctr("content", "ls").stdout
    # Creating a container makes containerd's client read the image config: ours is accepted...
    containerd.ctr("containers", "create", "--runtime", "io.containerd.wasm-oci.v1", ref, "interop-image")
    containerd.ctr("containers", "delete", "interop-image")
    # ...while the CNCF artifact layout is stored but refused, which is why `image` is the default format.
    art_ref = f"{registry.host}/interop/ctr:artifact"
    api.push(str(HELLO), art_ref, PLAIN, PLAIN, package_options=api.PackageOptions(format="artifact"))
    containerd.ctr("images", "pull", *registry.ctr_pull_flags(), art_ref)
    refused = containerd.ctr("containers", "create", art_ref, "interop-artifact", check=False)
    assert refused.returncode != 0 and "unknown image config media type" in refused.stderr
