"""Quick real checks that the service fixtures work with the real peers (oras, crane, ctr)."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from services.containerd import ContainerdServer
from services.pki import TestCA
from services.registry import RegistryServer
from services.token_server import TokenServer
from services.tools import ToolRunner

WASM_CONFIG = {
    "architecture": "wasm",
    "os": "wasip2",
    "rootfs": {"type": "layers", "diff_ids": []},
    "config": {"Entrypoint": ["/hello.wasm"]},
}


def oras_round_trip(oras: ToolRunner, reg: RegistryServer, tmp_path: Path) -> str:
    """Push a unique file, pull it back, return the pushed manifest digest."""
    payload = f"hello {secrets.token_hex(8)}\n"
    (tmp_path / "hello.txt").write_text(payload)
    ref = f"{reg.host}/smoke/hello:{secrets.token_hex(4)}"
    pushed = oras("push", *reg.oras_flags(), ref, "hello.txt", cwd=tmp_path)
    assert "Digest: sha256:" in pushed.stdout
    out = tmp_path / "out"
    oras("pull", *reg.oras_flags(), "--output", out, ref)
    assert (out / "hello.txt").read_text() == payload
    return pushed.stdout.split("Digest: ")[1].split()[0]


def push_wasm_image(oras: ToolRunner, reg: RegistryServer, tmp_path: Path) -> str:
    """An OCI image (standard config, one application/wasm layer) as containerd pulls it."""
    (tmp_path / "hello.wasm").write_bytes(b"\0asm\x0d\x00\x01\x00" + secrets.token_bytes(8))
    (tmp_path / "config.json").write_text(json.dumps(WASM_CONFIG))
    ref = f"{reg.host}/smoke/wasm:{secrets.token_hex(4)}"
    oras(
        "push",
        *reg.oras_flags(),
        "--config",
        "config.json:application/vnd.oci.image.config.v1+json",
        ref,
        "hello.wasm:application/wasm",
        cwd=tmp_path,
    )
    return ref


def http_status(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.registry
@pytest.mark.peer
def test_plain_registry_round_trip_and_blob_path(
    registry: RegistryServer, oras_cli: ToolRunner, crane_cli: ToolRunner, tmp_path: Path
) -> None:
    digest = oras_round_trip(oras_cli, registry, tmp_path)
    tag_ref = oras_cli("repo", "tags", "--plain-http", f"{registry.host}/smoke/hello").stdout
    assert tag_ref.strip()
    manifest = json.loads(oras_cli("manifest", "fetch", "--plain-http", f"{registry.host}/smoke/hello@{digest}").stdout)
    layer = manifest["layers"][0]["digest"]
    blob = registry.blob_path(layer)
    assert blob.read_text().startswith("hello ")
    # crane sees the same manifest.
    crane_digest = crane_cli("digest", "--insecure", f"{registry.host}/smoke/hello@{digest}")
    assert crane_digest.stdout.strip() == digest
    # Corrupting the stored blob is caught by the client's digest check.
    blob.write_text("corrupted\n")
    bad = oras_cli("pull", "--plain-http", "--output", tmp_path / "bad", f"{registry.host}/smoke/hello@{digest}", check=False)
    assert bad.returncode != 0, bad.stdout


@pytest.mark.registry
@pytest.mark.peer
def test_secure_registry_tls_and_basic_auth(secure_registry: RegistryServer, oras_cli: ToolRunner, tmp_path: Path) -> None:
    reg = secure_registry
    assert reg.base_url.startswith("https://") and reg.ca_cert and reg.ca_cert.exists()
    assert reg.username and reg.password
    oras_round_trip(oras_cli, reg, tmp_path)
    auth_file = tmp_path / "auth.json"
    login = ["login", "--registry-config", str(auth_file), "--ca-file", str(reg.ca_cert), reg.host]
    oras_cli(*login, "-u", reg.username, "--password-stdin", input=reg.password)
    assert reg.host in auth_file.read_text()
    wrong = oras_cli(*login, "-u", reg.username, "--password-stdin", input="wrong", check=False)
    assert wrong.returncode != 0
    anonymous = oras_cli("repo", "tags", "--ca-file", reg.ca_cert, f"{reg.host}/smoke/hello", check=False)
    assert anonymous.returncode != 0
    untrusted = oras_cli("repo", "tags", "-u", reg.username, "-p", reg.password, f"{reg.host}/smoke/hello", check=False)
    assert "certificate" in untrusted.stderr


@pytest.mark.registry
@pytest.mark.peer
def test_token_registry_bearer_flow(token_registry: RegistryServer, oras_cli: ToolRunner, tmp_path: Path) -> None:
    reg = token_registry
    assert reg.token_server is not None and reg.username
    seen = len(reg.token_server.requests)
    oras_round_trip(oras_cli, reg, tmp_path)
    granted = reg.token_server.requests[seen:]
    assert any(r["user"] == reg.username and r["scope"] for r in granted), granted
    wrong = oras_cli("repo", "tags", "--plain-http", "-u", reg.username, "-p", "wrong", f"{reg.host}/smoke/hello", check=False)
    assert wrong.returncode != 0 and "401" in wrong.stderr
    # A well-formed token signed by a cert outside rootcertbundle is refused.
    rogue_ca = TestCA.create(tmp_path / "rogue")
    rogue = TokenServer(
        signer=rogue_ca.issue(tmp_path / "rogue", "signer", "rogue", server=False),
        username="x",
        password="x",
        service=reg.token_server.service,
        issuer=reg.token_server.issuer,
    )
    assert http_status(f"{reg.base_url}/v2/", rogue.issue(reg.username, rogue.service, [])) == 401
    genuine = reg.token_server.issue(reg.username, reg.token_server.service, [])
    assert http_status(f"{reg.base_url}/v2/", genuine) == 200


@pytest.mark.containerd
@pytest.mark.registry
def test_containerd_pulls_wasm_image(containerd: ContainerdServer, registry: RegistryServer, oras_cli: ToolRunner, tmp_path: Path) -> None:
    assert containerd.mount_ns and containerd.shim_bin_dir.is_dir()
    ref = push_wasm_image(oras_cli, registry, tmp_path)
    containerd.ctr("images", "pull", *registry.ctr_pull_flags(), ref)
    listed = containerd.ctr("images", "list", "--quiet").stdout.split()
    assert ref in listed


@pytest.mark.containerd
@pytest.mark.registry
@pytest.mark.parametrize("which", ["secure_registry", "token_registry"])
def test_containerd_pulls_with_auth(
    containerd: ContainerdServer,
    oras_cli: ToolRunner,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    which: str,
) -> None:
    reg: RegistryServer = request.getfixturevalue(which)
    ref = push_wasm_image(oras_cli, reg, tmp_path)
    denied = containerd.ctr("images", "pull", *reg.ctr_pull_flags(credentials=False), ref, check=False)
    assert denied.returncode != 0
    containerd.ctr("images", "pull", *reg.ctr_pull_flags(), ref)
    assert ref in containerd.ctr("images", "list", "--quiet").stdout.split()
