"""push / pull / inspect / copy against the real CNCF distribution registry."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from services.registry import RegistryServer
from services.tools import ToolRunner
from services.wasmgen import HELLO, MODULE, padded_component
from wasm_oci.oci import distribution as api
from wasm_oci.oci.options import RegistryOptions

PLAIN = RegistryOptions(plain_http=True)


def _json(result) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(result.stdout)


def test_push_prints_the_digest_and_pull_gets_identical_bytes(wasm_oci: ToolRunner, registry: RegistryServer, tmp_path: Path) -> None:
    ref = f"{registry.host}/dist/hello:v1"
    pushed = _json(wasm_oci("push", HELLO, ref, "--plain-http", "--format", "json"))
    assert pushed["reference"] == f"{ref}@{pushed['digest']}"
    assert pushed["mediaType"] == "application/vnd.oci.image.manifest.v1+json" and pushed["size"] > 0
    out = tmp_path / "pulled.wasm"
    pulled = _json(wasm_oci("pull", ref, "--plain-http", "-o", out, "--format", "json"))
    assert pulled["digest"] == pushed["digest"]
    assert out.read_bytes() == HELLO.read_bytes()
    # Pulling by digest from the local store it landed in works without the registry.
    assert wasm_oci("inspect", f"{ref}@{pushed['digest']}", "--plain-http").returncode == 0
    assert wasm_oci("inspect", f"{registry.host}/dist/hello:v1", "--plain-http").stdout.count(pushed["digest"]) == 1


def test_push_skips_blobs_the_registry_has(wasm_oci: ToolRunner, registry: RegistryServer) -> None:
    first = _json(wasm_oci("push", MODULE, f"{registry.host}/dist/skip:a", "--plain-http", "--format", "json", "--created", "0"))
    assert first["blobsCopied"] == 2
    again = _json(wasm_oci("push", MODULE, f"{registry.host}/dist/skip:b", "--plain-http", "--format", "json", "--created", "0"))
    assert again["digest"] == first["digest"]
    assert (again["blobsCopied"], again["blobsSkipped"]) == (0, 2)


def test_inspect_shows_world_and_sizes(wasm_oci: ToolRunner, registry: RegistryServer) -> None:
    ref = f"{registry.host}/dist/inspect:art"
    wasm_oci("push", HELLO, ref, "--plain-http", "--package-format", "artifact", "--created", "0")
    doc = _json(wasm_oci("inspect", ref, "--plain-http", "--format", "json"))
    assert doc["format"] == "artifact"
    assert doc["config"]["descriptor"]["mediaType"] == "application/vnd.wasm.config.v0+json"
    assert doc["world"]["target"] == "wasi:cli/command@0.2.0"
    assert doc["layer"]["size"] == HELLO.stat().st_size
    assert doc["size"] == doc["layer"]["size"] + doc["config"]["descriptor"]["size"] + len(
        json.dumps(doc["manifest"], separators=(",", ":"))
    )
    text = wasm_oci("inspect", ref, "--plain-http").stdout
    assert "World target: wasi:cli/command@0.2.0" in text and "export wasi:cli/run@0.2.0" in text


def test_copy_between_registry_and_layouts_keeps_the_digest(wasm_oci: ToolRunner, registry: RegistryServer, tmp_path: Path) -> None:
    src = f"{registry.host}/stage/app:rc1"
    digest = _json(wasm_oci("push", HELLO, src, "--plain-http", "--format", "json"))["digest"]
    layout = f"oci:{tmp_path}/airgap:rc1"
    assert _json(wasm_oci("copy", src, layout, "--plain-http", "--format", "json"))["digest"] == digest
    promoted = f"{registry.host}/prod/app:1.0"
    assert _json(wasm_oci("copy", layout, promoted, "--plain-http", "--format", "json"))["digest"] == digest
    by_digest = f"{registry.host}/prod2/app@{digest}"
    copied = _json(wasm_oci("copy", f"{src}@{digest}", by_digest, "--plain-http", "--format", "json"))
    assert copied["reference"] == by_digest
    blob = (tmp_path / "airgap" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == digest


def test_large_component_streams_both_ways(private_home: Path, registry: RegistryServer, tmp_path: Path) -> None:
    """110 MB: uploads stream from the store and downloads stream to disk, each verified on the way."""
    big = tmp_path / "big.wasm"
    big.write_bytes(padded_component(110_000_000, b"large-blob-test"))
    ref = f"{registry.host}/dist/big:1"
    pushed = api.push(str(big), ref, PLAIN, PLAIN)
    assert pushed.stats and pushed.stats.blobs_copied == 2 and pushed.stats.bytes_copied > 110_000_000
    out = tmp_path / "big-pulled.wasm"
    pulled = api.pull(ref, PLAIN, out)
    assert pulled.descriptor.digest == pushed.descriptor.digest
    assert out.stat().st_size == 110_000_000
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()


def test_pull_of_a_corrupted_blob_fails_and_leaves_nothing(wasm_oci: ToolRunner, registry: RegistryServer, tmp_path: Path) -> None:
    ref = f"{registry.host}/dist/corrupt:1"
    wasm = padded_component(300_000, b"corrupt-me")
    src = tmp_path / "c.wasm"
    src.write_bytes(wasm)
    layer = "sha256:" + hashlib.sha256(wasm).hexdigest()
    wasm_oci("push", src, ref, "--plain-http")
    stored = registry.blob_path(layer)
    data = bytearray(stored.read_bytes())
    data[1000] ^= 0xFF
    stored.write_bytes(bytes(data))
    out = tmp_path / "existing.wasm"
    out.write_bytes(b"previous content")
    result = wasm_oci("pull", ref, "--plain-http", "-o", out, check=False)
    assert result.returncode == 6, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"wasm-oci: error: blob {layer}: content digest sha256:{hashlib.sha256(bytes(data)).hexdigest()} does not match {layer}"
    ]
    assert out.read_bytes() == b"previous content"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".existing")] == []
    store = Path(wasm_oci.env["WASM_OCI_HOME"]) / "store"
    assert not (store / "blobs" / "sha256" / layer.split(":")[1]).exists()
    assert not list((store / "blobs" / "sha256").glob(".*tmp"))
    assert not (store / "index.json").exists() or ref not in (store / "index.json").read_text()


def test_pull_accepts_layer_types_other_wasm_tools_push(
    private_home: Path, registry: RegistryServer, oras_cli: ToolRunner, tmp_path: Path
) -> None:
    for media_type in (
        "application/vnd.wasm.component.v1+wasm",
        "application/vnd.w3c.wasm.module.v1+wasm",
        "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
    ):
        name = media_type.split("/")[1].split("+")[0].replace(".", "-")
        ref = f"{registry.host}/layers/{name}:1"
        oras_cli("push", "--plain-http", ref, f"hello.wasm:{media_type}", cwd=HELLO.parent)
        out = tmp_path / f"{name}.wasm"
        api.pull(ref, PLAIN, out)
        assert out.read_bytes() == HELLO.read_bytes()


def test_pull_refuses_an_artifact_without_a_wasm_layer(
    wasm_oci: ToolRunner, registry: RegistryServer, oras_cli: ToolRunner, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("not wasm")
    ref = f"{registry.host}/dist/text:1"
    oras_cli("push", "--plain-http", ref, "notes.txt:text/plain", cwd=tmp_path)
    result = wasm_oci("pull", ref, "--plain-http", "-o", tmp_path / "x.wasm", check=False)
    assert result.returncode == 10
    assert "has no wasm layer (layer media types: text/plain)" in result.stderr
    assert not (tmp_path / "x.wasm").exists()


@pytest.mark.parametrize("fmt", ["image", "artifact"])
def test_pushed_index_selects_the_wasm_platform(
    private_home: Path, registry: RegistryServer, crane_cli: ToolRunner, fmt: str, tmp_path: Path
) -> None:
    ref = f"{registry.host}/multi/{fmt}:single"
    manifest = api.push(str(HELLO), ref, PLAIN, PLAIN, package_options=api.PackageOptions(format=fmt)).descriptor  # type: ignore[arg-type]
    index_ref = f"{registry.host}/multi/{fmt}:index"
    crane_cli("index", "append", "--insecure", "-m", f"{ref}@{manifest.digest}", "-t", index_ref)
    out = tmp_path / "from-index.wasm"
    result = api.pull(index_ref, PLAIN, out)
    assert result.descriptor.media_type == "application/vnd.oci.image.index.v1+json"
    assert out.read_bytes() == HELLO.read_bytes()


def test_a_pull_reads_each_document_from_the_registry_once(wasm_oci: ToolRunner, registry: RegistryServer) -> None:
    """The artifact check and the copy share what was fetched: one GET of the manifest, one of
    each blob (the registry's own access log counts them), every request naming its client."""
    ref = f"{registry.host}/once/hello:1"
    wasm_oci("push", HELLO, ref, "--plain-http")
    mark = len(registry.log_path.read_text().splitlines())
    wasm_oci("pull", ref, "--plain-http")
    lines = [line for line in registry.log_path.read_text().splitlines()[mark:] if '"GET /v2/once/hello/' in line]
    paths = [line.split('"GET ', 1)[1].split(" ", 1)[0] for line in lines]
    assert sum("/manifests/" in path for path in paths) == 1, paths
    blobs = [path for path in paths if "/blobs/" in path]
    assert len(blobs) == 2 and len(set(blobs)) == 2, paths  # config and wasm layer, each once
    assert all(line.rstrip().endswith('"wasm-oci/0.1.0"') for line in lines), lines[0]
