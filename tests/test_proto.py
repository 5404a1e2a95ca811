"""The generated code under proto/: reproducible from the .proto files, and light to import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from wasm_oci.proto import generate

MESSAGE_MODULES = [
    "wasm_oci.proto.task_pb2",
    "wasm_oci.proto.task_v2_pb2",
    "wasm_oci.proto.events_pb2",
    "wasm_oci.proto.events_ttrpc_pb2",
    "wasm_oci.proto.ttrpc_pb2",
    "wasm_oci.proto.cri_pb2",
    "wasm_oci.proto.containers_pb2",
    "wasm_oci.proto.images_pb2",
    "wasm_oci.proto.content_pb2",
    "wasm_oci.proto.events_service_pb2",
]


def test_regenerating_gives_the_committed_files(tmp_path: Path) -> None:
    fresh = {p.name: p.read_bytes() for p in generate.generate(tmp_path)}
    committed = {p.name: p.read_bytes() for p in generate.generated_files(generate.PROTO_DIR)}
    assert sorted(fresh) == sorted(committed), "run `python -m wasm_oci.proto.generate`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"{stale} differ from protoc's output: run `python -m wasm_oci.proto.generate`"


def test_every_proto_file_is_generated() -> None:
    modules = {p.stem for p in generate.generated_files(generate.PROTO_DIR) if p.suffix == ".py"}
    for source in generate.proto_files():
        assert f"{source.stem}_pb2" in modules


def test_message_modules_do_not_import_grpc() -> None:
    """The shim's start/delete paths load messages; grpc alone costs ~60 ms to import."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {MESSAGE_MODULES!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'grpc' or m.startswith('grpc.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_transport_core_does_not_import_grpc() -> None:
    code = (
        "import json, sys\nimport wasm_oci.shim.transport.ttrpc, wasm_oci.shim.transport.events\nprint(json.dumps('grpc' in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) is False
