"""Packaging: component/module detection, both config layouts, reproducible digests."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from services.tools import ToolRunner
from services.wasmgen import HELLO, MODULE
from wasm_oci.errors import InvalidWasm, MalformedContent, UsageError
from wasm_oci.oci import distribution as api
from wasm_oci.oci import mediatypes, wasminfo
from wasm_oci.oci.artifact import read as read_artifact
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.memory_store import MemoryStore
from wasm_oci.oci.package import TRIGGER_LABEL, PackageOptions

EPOCH = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
LIBRARY = '(component (core module $m (func (export "f"))) (core instance $i (instantiate $m)) (func (export "f") (canon lift (core func $i "f"))))'
"""A library component: it exports a function, not wasi:cli/run, so there is nothing to run per request."""


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


def test_http_trigger_is_a_label_and_the_shim_port(wasm_oci: ToolRunner, tmp_path: Path) -> None:
    ref = f"oci:{tmp_path}/layout:v1"
    wasm_oci("package", HELLO, "-t", ref, "--trigger", "http", "--created", "1704164645")
    shown = json.loads(wasm_oci("inspect", ref, "--format", "json").stdout)
    image = shown["config"]["content"]["config"]
    assert image["Labels"][TRIGGER_LABEL] == "http" and image["ExposedPorts"] == {"8080/tcp": {}}
    assert TRIGGER_LABEL not in shown["manifest"]["annotations"]  # the image format says it once, in the config
    assert shown["trigger"] == "http" and shown["world"]["target"] == "wasi:cli/command@0.2.0"
    assert "Trigger:      http" in wasm_oci("inspect", ref).stdout.splitlines()


def test_command_trigger_leaves_the_image_as_it_was(wasm_oci: ToolRunner) -> None:
    """The default is not recorded: images packaged before triggers existed keep their digests."""
    created = ("--created", "1704164645", "--format", "json")
    plain = json.loads(wasm_oci("package", HELLO, "-t", "a:1", *created).stdout)
    command = json.loads(wasm_oci("package", HELLO, "-t", "b:1", "--trigger", "command", *created).stdout)
    assert command["digest"] == plain["digest"]
    shown = json.loads(wasm_oci("inspect", "a:1", "--format", "json").stdout)
    image = shown["config"]["content"]["config"]
    assert shown["trigger"] == "command" and "ExposedPorts" not in image and TRIGGER_LABEL not in image["Labels"]
    assert "Trigger:      command" in wasm_oci("inspect", "a:1").stdout.splitlines()


def test_artifact_format_records_the_trigger_as_an_annotation(wasm_oci: ToolRunner, tmp_path: Path) -> None:
    packaged, _ = api.package_file(HELLO, PackageOptions(format="artifact", created=EPOCH, trigger="http"))
    assert json.loads(packaged.manifest_bytes)["annotations"][TRIGGER_LABEL] == "http"
    assert b"trigger" not in packaged.config_bytes
    ref = f"oci:{tmp_path}/layout:v1"
    wasm_oci("package", MODULE, "-t", ref, "--package-format", "artifact", "--trigger", "http")
    shown = json.loads(wasm_oci("inspect", ref, "--format", "json").stdout)
    assert (shown["format"], shown["trigger"]) == ("artifact", "http")


@pytest.mark.parametrize(
    ("wat", "message"),
    [
        (
            LIBRARY,
            "lib.wasm: trigger http needs a runnable command or a wasi:http proxy, but this component exports neither wasi:cli/run nor wasi:http/incoming-handler (exports: f)",
        ),
        ('(module (memory (export "memory") 1))', "lib.wasm: trigger http needs a runnable command, but this module exports no _start"),
    ],
)
def test_http_trigger_needs_a_command(tmp_path: Path, wat: str, message: str) -> None:
    lib = tmp_path / "lib.wasm"
    lib.write_bytes(wasmtime.wat2wasm(wat))
    with pytest.raises(UsageError) as refused:
        api.package_file(lib, PackageOptions(trigger="http"))
    assert str(refused.value) == message
    api.package_file(lib)  # as a command it packages as before: nothing is checked that was not


def test_a_label_cannot_contradict_the_trigger() -> None:
    with pytest.raises(UsageError) as refused:
        api.package_file(HELLO, PackageOptions(labels={TRIGGER_LABEL: "http"}))
    assert str(refused.value) == "label dev.wasm-oci.trigger=http contradicts trigger command; set it with --trigger"


def _rewritten(fmt: str, edit_manifest: Any = None, edit_config: Any = None) -> tuple[MemoryStore, Descriptor]:
    """HELLO packaged, then its manifest or config edited as another tool might have written it."""
    packaged, wasm = api.package_file(HELLO, PackageOptions(format=fmt, created=EPOCH))  # type: ignore[arg-type]
    if edit_config:
        config = json.loads(packaged.config_bytes)
        edit_config(config)
        config_bytes = json.dumps(config).encode()
        packaged = dataclasses.replace(
            packaged, config=Descriptor.for_bytes(packaged.config.media_type, config_bytes), config_bytes=config_bytes
        )
    manifest = json.loads(packaged.manifest_bytes)
    manifest["config"] = packaged.config.to_json()
    if edit_manifest:
        edit_manifest(manifest)
    manifest_bytes = json.dumps(manifest).encode()
    packaged = dataclasses.replace(
        packaged, manifest=Descriptor.for_bytes(mediatypes.OCI_MANIFEST, manifest_bytes), manifest_bytes=manifest_bytes
    )
    store = MemoryStore()
    api.store_packaged(store, packaged, wasm, None)
    return store, packaged.manifest


def test_trigger_is_read_from_an_annotation_in_either_format() -> None:
    for fmt in ("image", "artifact"):
        store, root = _rewritten(fmt, edit_manifest=lambda m: m["annotations"].update({TRIGGER_LABEL: "http"}))
        assert read_artifact(store, root).trigger == "http"


@pytest.mark.parametrize(
    ("edits", "field"),
    [
        ({"edit_manifest": lambda m: m["annotations"].update({TRIGGER_LABEL: "cron"})}, "annotations: `dev.wasm-oci.trigger`"),
        ({"edit_config": lambda c: c["config"]["Labels"].update({TRIGGER_LABEL: "cron"})}, "Labels: `dev.wasm-oci.trigger`"),
    ],
)
def test_an_unknown_trigger_is_malformed(edits: dict[str, Any], field: str) -> None:
    store, root = _rewritten("image", **edits)
    with pytest.raises(MalformedContent, match=re.escape(f"{field} must be one of command, http, not 'cron'")):
        read_artifact(store, root)


def test_a_wasi_http_proxy_is_an_http_function_by_its_world(tmp_path: Path) -> None:
    from services import proxy_components

    wasm = proxy_components.fixed().read_bytes()
    info = wasminfo.inspect(wasm)
    assert info.is_proxy and info.target == "wasi:http/proxy@0.2.0"
    from wasm_oci.oci.package import package

    packaged = package(wasm, info, "proxy.wasm", PackageOptions())
    labels = json.loads(packaged.config_bytes)["config"]["Labels"]
    assert labels[TRIGGER_LABEL] == "http"
    assert json.loads(packaged.config_bytes)["config"]["ExposedPorts"] == {"8080/tcp": {}}
    with pytest.raises(UsageError, match="contradicts trigger http"):
        package(wasm, info, "proxy.wasm", PackageOptions(labels={TRIGGER_LABEL: "command"}))
