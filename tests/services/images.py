"""Ordinary Linux images built here for the tests and benchmarks, pushed to a local registry.

One gzip layer holding a static busybox (Debian's `busybox-static`, fetched by
tests/tools/install-system-deps.sh) at /bin/busybox with /bin/sh -> busybox, and a Cmd given
by the caller: the runc baseline of the benchmarks, and the CRI tests' pod sandbox (pause)
image. Pushed through the project's own registry code (MemoryStore -> copy_graph -> registry).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

from wasm_oci.oci import mediatypes
from wasm_oci.oci.copy import copy_graph
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.memory_store import MemoryStore
from wasm_oci.oci.options import RegistryOptions
from wasm_oci.oci.reference import RegistryReference
from wasm_oci.oci.remote import RemoteRepository

from .tools import INSTALL_SCRIPT, MissingToolError, tools_bin_dir

PLAIN_HTTP = RegistryOptions(plain_http=True)
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def static_busybox() -> Path:
    """The busybox-static binary the install script unpacked next to the other tools."""
    path = tools_bin_dir().parent / "root" / "bin" / "busybox"
    if not path.is_file():
        raise MissingToolError(f"{path} missing: run `bash {INSTALL_SCRIPT}` (Debian busybox-static)")
    return path


def _busybox_tar() -> bytes:
    """An uncompressed layer tar: /bin/busybox and /bin/sh -> busybox, fixed metadata."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo("bin")
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(directory)
        binary = static_busybox().read_bytes()
        member = tarfile.TarInfo("bin/busybox")
        member.size, member.mode = len(binary), 0o755
        tar.addfile(member, io.BytesIO(binary))
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
        tar.addfile(link)
    return out.getvalue()


def _json(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def push_busybox(host: str, repository: str, cmd: list[str], tag: str = "1") -> str:
    """Build the busybox image running `cmd` and push it as HOST/REPOSITORY:TAG; returns the reference."""
    tar = _busybox_tar()
    layer_bytes = gzip.compress(tar, mtime=0)
    config_bytes = _json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [Descriptor.for_bytes(LAYER, tar).digest]},
        }
    )
    layer = Descriptor.for_bytes(LAYER, layer_bytes)
    config = Descriptor.for_bytes(mediatypes.OCI_IMAGE_CONFIG, config_bytes)
    manifest_bytes = _json(
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [layer.to_json()],
        }
    )
    manifest = Descriptor.for_bytes(mediatypes.OCI_MANIFEST, manifest_bytes)
    memory = MemoryStore()
    memory.push_blob(layer, [layer_bytes])
    memory.push_blob(config, [config_bytes])
    memory.push_manifest(manifest, manifest_bytes, None)
    remote = RemoteRepository(RegistryReference(host, repository, tag), PLAIN_HTTP)
    copy_graph(memory, remote, manifest, tag)
    return f"{host}/{repository}:{tag}"
