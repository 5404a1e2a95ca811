"""What `run` and `serve` were asked to run -> verified Wasm bytes, a name and default env.

A SRC is a .wasm file, or a reference (registry, oci:PATH or local-store name). A reference
goes through `wasm_oci.api.pull`, which checks signatures per the trust policy and verifies every blob
into the local store; the wasm layer is then read back from the store and its digest checked
again, so the bytes the engine runs are the bytes the manifest names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from wasm_oci.errors import SignatureError
from wasm_oci.oci import digest as digests
from wasm_oci.wasm_file import names_wasm_file, read_wasm_file

if TYPE_CHECKING:
    from wasm_oci.oci.options import RegistryOptions
    from wasm_oci.signing.keys import PublicKey
    from wasm_oci.signing.trust import Decision


@dataclass(frozen=True)
class Source:
    wasm: bytes
    digest: str
    name: str
    """argv[0]: the file name, or the image's entrypoint or layer title."""
    env: dict[str, str] = field(default_factory=dict)
    """The image config's Env: defaults that --env overrides."""
    trust: Decision | None = None
    """The signature check that let a reference through (None for a file)."""


def resolve(src: str, options: RegistryOptions | None = None, verify_keys: Sequence[PublicKey] = ()) -> Source:
    """`verify_keys` (--verify-key) replace the trust policy's keys for a reference."""
    path = Path(src)
    if names_wasm_file(src):
        if verify_keys:
            raise SignatureError(f"{src} is a file, which carries no signature to verify (--verify-key needs a reference)")
        wasm = read_wasm_file(path)
        return Source(wasm, digests.of_bytes(wasm), path.name)
    # A reference: the registry and store code is imported only now (a file's run skips ~30 ms of it).
    from wasm_oci import api, paths
    from wasm_oci.oci.artifact import read as read_artifact
    from wasm_oci.oci.layout import OCILayout
    from wasm_oci.oci.package import TITLE
    from wasm_oci.oci.target import MAX_WASM, fetch_bytes

    pulled = api.pull(src, options, verify_keys=verify_keys)
    store = OCILayout(paths.local_store())
    artifact = read_artifact(store, pulled.descriptor)
    layer = artifact.layer
    wasm = fetch_bytes(store, layer, f"wasm layer of {pulled.reference}", limit=MAX_WASM)
    name = artifact.entrypoint[0] if artifact.entrypoint else layer.annotations.get(TITLE, "app.wasm")
    env = {key: value for key, _, value in (item.partition("=") for item in artifact.env)}
    return Source(wasm, layer.digest, name, env, cast("Decision | None", pulled.trust))  # what api.pull decides
