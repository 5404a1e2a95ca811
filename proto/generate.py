"""Regenerate the committed Python code from this folder's .proto files.

    python -m wasm_oci.proto.generate

Needs grpcio-tools (the `test` extra). The .proto files import each other as
"wasm_oci/proto/<name>.proto", so protoc's Python output imports `wasm_oci.proto.<name>_pb2`
and works inside this package as generated, with no rewriting. Message modules (`*_pb2.py`,
typed by `*_pb2.pyi`) import only protobuf; gRPC stubs go to separate `*_pb2_grpc.py` files, and
only for services spoken over gRPC, so the shim can load messages without importing grpc.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
# Services nobody speaks over gRPC: containerd 1.x (task v2) talks to shims over ttrpc only, and
# events are forwarded over ttrpc. They get no stubs.
TTRPC_ONLY = {"task_v2.proto", "events_ttrpc.proto"}
GENERATED_GLOBS = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py")


def proto_files() -> list[Path]:
    """This project's .proto files, sorted (protoc output does not depend on the order)."""
    return sorted(PROTO_DIR.glob("*.proto"))


def _protoc(include: Path, out: Path, flags: list[str], files: list[Path]) -> None:
    from importlib.resources import files as resource_files

    well_known = resource_files("grpc_tools") / "_proto"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{include}", f"-I{well_known}", *flags]
    cmd += [f"wasm_oci/proto/{f.name}" for f in files]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed ({result.returncode}):\n{result.stderr}")


def generate(out_dir: Path) -> list[Path]:
    """Write the generated modules into `out_dir`; returns their paths."""
    sources = proto_files()
    with_stubs = [f for f in sources if f.name not in TTRPC_ONLY and re.search(r"^service\s", f.read_text(), re.M)]
    with tempfile.TemporaryDirectory(prefix="wasm-oci-protoc-") as tmp:
        include = Path(tmp, "include")
        (include / "wasm_oci").mkdir(parents=True)
        (include / "wasm_oci" / "proto").symlink_to(PROTO_DIR)
        out = Path(tmp, "out")
        out.mkdir()
        _protoc(include, out, [f"--python_out={out}", f"--pyi_out={out}"], sources)
        _protoc(include, out, [f"--grpc_python_out={out}"], with_stubs)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for path in sorted((out / "wasm_oci" / "proto").iterdir()):
            shutil.copyfile(path, out_dir / path.name)
            written.append(out_dir / path.name)
    return written


def generated_files(directory: Path) -> list[Path]:
    """The generated modules present in `directory`."""
    return sorted(p for pattern in GENERATED_GLOBS for p in directory.glob(pattern))


def main() -> None:
    for stale in generated_files(PROTO_DIR):
        stale.unlink()
    for path in generate(PROTO_DIR):
        print(path.relative_to(PROTO_DIR.parent))


if __name__ == "__main__":
    main()
