"""Packaging: component/module detection, both config layouts, reproducible digests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.tools import ToolRunner
from services.wasmgen import HELLO, MODULE
from wasm_oci.errors import InvalidWasm
from wasm_oci.oci import distribution as api
from wasm_oci.oci import mediatypes, wasminfo
from wasm_oci.oci.package import PackageOptions

EPOCH = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_component_world_is_read_from_the_binary() -> None:
    info = wasminfo.inspect(HELLO.read_bytes())
    assert info.kind == "component" and info.os == "wasip2"
    assert info.target == "wasi:cli/command@0.2.0"
    assert info.exports == ("wasi:cli/run@0.2.0",)
    assert "wasi:cli/environment@0.2.0" in info.imports and "wasi:filesystem/preopens@0.2.0" in info.imports


def test_core_module_is_wasip1() -> None:
    info = wasminfo.inspect(MODULE.read_bytes())
    assert (info.kind, info.os, info.target) == ("module", "wasip1", None)
    assert info.imports == ("wasi_snapshot_preview1",) and "_start" in info.exports


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"#!/bin/sh\necho hi\n", "missing \\\\0asm magic"),
        (b"\0asm\x02\0\0\0", "unsupported WebAssembly binary version"),
        (HELLO.read_bytes()[:200], "invalid WebAssembly component: unexpected end-of-file"),
        (MODULE.read_bytes()[:100], "invalid WebAssembly module"),
    ],
)
def test_invalid_wasm_is_rejected(data: bytes, message: str) -> None:
    with pytest.raises(InvalidWasm, match=message):
        wasminfo.inspect(data)


def test_image_format_is_what_containerd_runs(tmp_path: Path) -> None:
    packaged, _ = api.package_file(HELLO, PackageOptions(created=EPOCH, env=("A=1",), labels={"team": "x"}))
    manifest = json.loads(packaged.manifest_bytes)
    config = json.loads(packaged.config_bytes)
    assert manifest["config"]["mediaType"] == mediatypes.OCI_IMAGE_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/wasm"]
    assert manifest["layers"][0]["annotations"]["org.opencontainers.image.title"] == "hello.wasm"
    assert (config["os"], config["architecture"]) == ("wasip2", "wasm")
    assert config["rootfs"] == {"type": "layers", "diff_ids": []}
    assert config["config"]["Entrypoint"] == ["/hello.wasm"] and config["config"]["Env"] == ["A=1"]
    assert config["config"]["Labels"]["team"] == "x"
    assert config["config"]["Labels"]["dev.wasm-oci.component.target"] == "wasi:cli/command@0.2.0"
    assert config["created"] == "2024-01-02T03:04:05Z"


def test_artifact_format_follows_the_cncf_layout() -> None:
    packaged, wasm = api.package_file(HELLO, PackageOptions(format="artifact", created=EPOCH, author="ci@example.com"))
    config = json.loads(packaged.config_bytes)
    assert packaged.config.media_type == mediatypes.WASM_CONFIG
    assert config["layerDigests"] == [packaged.layer.digest]
    assert config["author"] == "ci@example.com"
    assert (config["os"], config["architecture"]) == ("wasip2", "wasm")
    assert config["component"]["target"] == "wasi:cli/command@0.2.0"
    assert config["component"]["exports"] == ["wasi:cli/run@0.2.0"]
    assert packaged.layer.size == len(wasm)


def test_module_artifact_has_no_component_section() -> None:
    packaged, _ = api.package_file(MODULE, PackageOptions(format="artifact", created=EPOCH))
    config = json.loads(packaged.config_bytes)
    assert config["os"] == "wasip1" and "component" not in config


def test_same_input_and_time_give_the_same_digest(wasm_oci: ToolRunner) -> None:
    first = json.loads(wasm_oci("package", HELLO, "-t", "a:1", "--created", "2024-01-02T03:04:05Z", "--format", "json").stdout)
    second = json.loads(wasm_oci("package", HELLO, "-t", "b:1", "--created", "1704164645", "--format", "json").stdout)
    assert first["digest"] == second["digest"]
    wasm_oci.env["SOURCE_DATE_EPOCH"] = "1704164645"
    third = json.loads(wasm_oci("package", HELLO, "-t", "d:1", "--format", "json").stdout)
    assert third["digest"] == first["digest"]
    other = json.loads(wasm_oci("package", HELLO, "-t", "e:1", "--created", "1704164646", "--format", "json").stdout)
    assert other["digest"] != first["digest"]


def test_package_into_a_layout_directory(wasm_oci: ToolRunner, tmp_path: Path) -> None:
    out = wasm_oci("package", MODULE, "-t", f"oci:{tmp_path}/layout:v1", "--package-format", "artifact").stdout.strip()
    assert out.startswith(f"oci:{tmp_path}/layout:v1@sha256:")
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "v1"
    assert json.loads((tmp_path / "layout" / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    shown = json.loads(wasm_oci("inspect", f"oci:{tmp_path}/layout:v1", "--format", "json").stdout)
    assert shown["format"] == "artifact" and shown["os"] == "wasip1"
