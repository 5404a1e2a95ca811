"""The local store as users manage it: images / tag / rm / prune, reads that need no registry
(a pulled digest, --offline), and a failed pull that leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.registry import RegistryServer, plain_registry
from services.tools import ToolRunner
from services.wasmgen import HELLO, padded_component

pytestmark = pytest.mark.registry


def _blobs(wasm_oci: ToolRunner) -> set[str]:
    root = Path(wasm_oci.env["WASM_OCI_HOME"]) / "store" / "blobs" / "sha256"
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


def test_images_tag_rm_prune(wasm_oci: ToolRunner) -> None:
    assert "is empty" in wasm_oci("images").stderr
    digest = wasm_oci("package", HELLO, "-t", "hello:1").stdout.strip().rsplit("@", 1)[1]
    assert wasm_oci("tag", "hello:1", "hello:prod").stdout.strip() == f"hello:prod@{digest}"
    listed = json.loads(wasm_oci("images", "--format", "json").stdout)
    assert [(e["name"], e["digest"]) for e in listed] == [("hello:1", digest), ("hello:prod", digest)]
    held = _blobs(wasm_oci)
    assert len(held) == 3  # manifest, config, wasm layer

    missing = wasm_oci("rm", "hello:1", "nope:2", check=False)
    assert missing.returncode == 5 and "Removed hello:1" in missing.stderr and "nope:2" in missing.stderr
    assert "Removed 0 blob(s)" in wasm_oci("prune").stderr  # hello:prod still names them
    wasm_oci("rm", "hello:prod")
    assert "Removed 3 blob(s)" in wasm_oci("prune").stderr
    assert _blobs(wasm_oci) == set()
    assert wasm_oci("tag", "hello:prod", "again:1", check=False).returncode == 5


def test_pulled_artifacts_run_without_the_registry(wasm_oci: ToolRunner, tmp_path: Path) -> None:
    """A digest pulled earlier, or a name with --offline, is read from the store: the registry is stopped."""
    with plain_registry(tmp_path / "gone") as gone:
        ref = f"{gone.host}/offline/hello:1"
        digest = json.loads(wasm_oci("push", HELLO, ref, "--plain-http", "--format", "json").stdout)["digest"]
        wasm_oci("pull", ref, "--plain-http")
    pinned = f"{gone.host}/offline/hello@{digest}"
    assert "arg: hi\n" in wasm_oci("run", "--registry-timeout", "5", pinned, "hi").stdout
    assert "arg: there\n" in wasm_oci("run", "--offline", ref, "there").stdout
    assert digest in wasm_oci("inspect", "--offline", ref).stdout
    out = tmp_path / "out.wasm"
    wasm_oci("pull", "--offline", pinned, "-o", out)
    assert out.read_bytes() == HELLO.read_bytes()
    # The same bytes under another repository were not checked against that repository's rule.
    other = wasm_oci("inspect", "--offline", f"{gone.host}/other/hello@{digest}", check=False)
    assert other.returncode == 5 and "not in the local store" in other.stderr
    # Without --offline an unpulled name goes to the registry, which is gone.
    assert wasm_oci("run", "--registry-timeout", "5", f"{gone.host}/offline/hello:2", check=False).returncode == 8
    assert wasm_oci("push", "--offline", HELLO, f"{gone.host}/offline/hello:3", check=False).returncode == 2


def test_a_failed_pull_leaves_no_blob(wasm_oci: ToolRunner, registry: RegistryServer, tmp_path: Path) -> None:
    unique = tmp_path / "unique.wasm"  # its layer is corrupted below: no other test may share it
    unique.write_bytes(padded_component(16 << 10, seed=b"failed pull"))
    ref = f"{registry.host}/broken/hello:1"
    pushed = json.loads(wasm_oci("push", unique, ref, "--plain-http", "--format", "json").stdout)
    manifest = json.loads(registry.blob_path(pushed["digest"]).read_bytes())
    layer = registry.blob_path(manifest["layers"][0]["digest"])
    layer.chmod(0o644)
    layer.write_bytes(layer.read_bytes()[:-1] + b"X")  # same size, other content
    failed = wasm_oci("pull", ref, "--plain-http", check=False)
    assert failed.returncode == 6 and "Traceback" not in failed.stderr
    assert _blobs(wasm_oci) == set()  # the config blob stored before the layer failed is gone again
    assert json.loads(wasm_oci("images", "--format", "json").stdout) == []


def test_directories_and_files_say_what_was_expected(wasm_oci: ToolRunner, tmp_path: Path) -> None:
    folder = tmp_path / "module"
    folder.mkdir()
    for command in ("run", "inspect", "pull"):
        result = wasm_oci(command, str(folder), check=False)
        assert result.returncode == 3 and "is a directory" in result.stderr, result.stderr
    shown = wasm_oci("inspect", HELLO).stdout
    assert "World target: wasi:cli/command@0.2.0" in shown and "not looked up (a file)" in shown
