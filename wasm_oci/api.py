"""The Python API: distribution with the trust policy applied, and signing. The CLI is a thin
layer over these functions.

    from pathlib import Path
    from wasm_oci import api
    api.push("hello.wasm", "registry.example/acme/hello:1.0", sign_key=api.load_private_key(Path("release.key"), "..."))
    api.pull("registry.example/acme/hello:1.0", output=Path("hello.wasm"))   # signatures checked per the policy

This module joins the layers below it: `oci.api` moves and verifies content and takes a trust
check and a signer as callbacks; `signing` supplies them. References are strings in the grammar
of `wasm_oci.oci.reference`; errors are `wasm_oci.errors.WasmOciError` subclasses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from wasm_oci.oci import distribution, localstore
from wasm_oci.oci.copy import Progress
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.distribution import PackageOptions, Result, inspect, login, logout, package
from wasm_oci.oci.options import RegistryOptions
from wasm_oci.oci.reference import Reference
from wasm_oci.oci.target import Target

if TYPE_CHECKING:
    from wasm_oci.signing.attach import Attached
    from wasm_oci.signing.keys import PrivateKey, PublicKey
    from wasm_oci.signing.trust import Decision

__all__ = [
    "PackageOptions",
    "RegistryOptions",
    "Result",
    "copy",
    "images",
    "inspect",
    "load_private_key",
    "load_public_key",
    "login",
    "logout",
    "package",
    "prune",
    "pull",
    "push",
    "remove",
    "tag",
    "tags",
]

images = localstore.entries
"""What the local store holds: (name, descriptor) entries."""
tag = localstore.tag
"""tag(source, name): keep what `source` (a store name, or a pulled registry reference) names under `name` too."""
remove = localstore.remove
"""remove(names): drop names from the local store; their blobs go at the next `prune`."""
prune = localstore.prune
"""prune(): free the blobs no name reaches; (blobs removed, bytes freed)."""


def tags(reference: str, options: RegistryOptions | None = None) -> list[str]:
    """The tags of a registry repository (`HOST[:PORT]/REPO`, without tag or digest), in the
    registry's order: every page of the listing, within one `options.deadline`."""
    from wasm_oci.oci.oras_compat import repository_tags  # oras-py costs ~150 ms to import: only here

    return repository_tags(reference, options)


def load_private_key(path: Path, password: str | None) -> PrivateKey:
    from wasm_oci.signing.keys import load_private  # cryptography costs ~15 ms to import: only when signing

    return load_private(path, password)


def load_public_key(path: Path) -> PublicKey:
    from wasm_oci.signing.keys import load_public

    return load_public(path)


def copy(
    source: str,
    dest: str,
    src_options: RegistryOptions | None = None,
    dst_options: RegistryOptions | None = None,
    progress: Progress | None = None,
    package_options: PackageOptions = PackageOptions(),
    sign_key: PrivateKey | None = None,
) -> Result:
    """Copy an artifact and all its blobs (the manifest digest is unchanged); `sign_key` signs
    it in both cosign layouts once it is there."""

    def sign(target: Target, ref: Reference, root: Descriptor) -> Sequence[Attached]:
        from wasm_oci.signing import attach

        assert sign_key is not None
        return attach.sign(target, ref, root, sign_key)

    return distribution.copy(source, dest, src_options, dst_options, progress, package_options, sign if sign_key else None)


push = copy
"""Push is a copy whose source is usually a .wasm file or a local-store tag."""


def pull(
    ref_text: str,
    options: RegistryOptions | None = None,
    output: Path | None = None,
    progress: Progress | None = None,
    verify_keys: Sequence[PublicKey] = (),
) -> Result:
    """Fetch into the local store, or with `output` write just the wasm there; every byte is
    verified, and signatures are checked before anything is written: by `verify_keys` when
    given, else as the trust policy says (see `wasm_oci.signing.policy`)."""

    def check(ref: Reference, target: Target, root: Descriptor) -> Decision:
        from wasm_oci.signing import trust

        return trust.check(ref, target, root, verify_keys)

    return distribution.pull(ref_text, options, output, progress, check)
