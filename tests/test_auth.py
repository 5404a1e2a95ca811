"""Credentials and TLS as users configure them: login/logout, Docker config, helpers, CA files, tokens."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

from services.registry import RegistryServer
from services.tools import ToolRunner
from services.wasmgen import HELLO

CRED_HELPER = """#!/bin/sh
# A docker credential helper (docker-credential-helpers protocol) keeping secrets in one JSON file.
store="$(dirname "$0")/secrets.json"
[ -f "$store" ] || echo '{}' > "$store"
read -r input
case "$1" in
  get) python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); e=d.get(sys.argv[2])
if not e: print("credentials not found in native keychain"); sys.exit(1)
print(json.dumps({"ServerURL": sys.argv[2], "Username": e[0], "Secret": e[1]}))' "$store" "$input" ;;
  store) python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); e=json.loads(sys.argv[2])
d[e["ServerURL"]]=[e["Username"], e["Secret"]]; json.dump(d, open(sys.argv[1], "w"))' "$store" "$input" ;;
  erase) python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d.pop(sys.argv[2], None); json.dump(d, open(sys.argv[1], "w"))' "$store" "$input" ;;
esac
"""


def _docker_config(cli: ToolRunner) -> dict:  # type: ignore[type-arg]
    return json.loads((Path(cli.env["DOCKER_CONFIG"]) / "config.json").read_text())


def test_login_checks_and_saves_credentials(wasm_oci: ToolRunner, secure_registry: RegistryServer) -> None:
    reg = secure_registry
    assert reg.username and reg.password and reg.ca_cert
    wrong = wasm_oci("login", reg.host, "--ca-file", reg.ca_cert, "-u", reg.username, "-p", "nope", check=False)
    assert wrong.returncode == 7
    assert wrong.stderr.strip().splitlines() == [f"wasm-oci: error: {reg.host} refused the credentials"]
    assert not (Path(wasm_oci.env["DOCKER_CONFIG"]) / "config.json").exists()

    wasm_oci("login", reg.host, "--ca-file", reg.ca_cert, "-u", reg.username, "--password-stdin", input=reg.password + "\n")
    saved = _docker_config(wasm_oci)["auths"][reg.host]["auth"]
    assert base64.b64decode(saved).decode() == f"{reg.username}:{reg.password}"
    mode = stat.S_IMODE(os.stat(Path(wasm_oci.env["DOCKER_CONFIG"]) / "config.json").st_mode)
    assert mode == 0o600

    ref = f"{reg.host}/secure/hello:1"
    wasm_oci("push", HELLO, ref, "--ca-file", reg.ca_cert)
    assert wasm_oci("pull", ref, "--ca-file", reg.ca_cert).returncode == 0

    wasm_oci("logout", reg.host)
    assert reg.host not in _docker_config(wasm_oci).get("auths", {})
    denied = wasm_oci("pull", ref, "--ca-file", reg.ca_cert, check=False)
    assert denied.returncode == 7
    assert f"run 'wasm-oci login {reg.host}'" in denied.stderr


def test_tls_needs_the_ca(wasm_oci: ToolRunner, secure_registry: RegistryServer) -> None:
    result = wasm_oci("inspect", f"{secure_registry.host}/secure/hello:1", check=False)
    assert result.returncode == 8
    assert result.stderr.startswith(f"wasm-oci: error: TLS with {secure_registry.host} failed")
    assert "--ca-file" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_credentials_from_docker_config_auths(wasm_oci: ToolRunner, secure_registry: RegistryServer, oras_cli: ToolRunner) -> None:
    """What `oras login` (or docker login) writes is what we read."""
    reg = secure_registry
    config_dir = Path(wasm_oci.env["DOCKER_CONFIG"])
    oras_cli.env["DOCKER_CONFIG"] = str(config_dir)
    try:
        oras_cli("login", reg.host, "--ca-file", reg.ca_cert, "-u", reg.username, "-p", reg.password)
    finally:
        oras_cli.env["DOCKER_CONFIG"] = str(oras_cli.home / ".docker")
    wasm_oci("push", HELLO, f"{reg.host}/secure/from-oras-login:1", "--ca-file", reg.ca_cert)


def test_credential_helper(wasm_oci: ToolRunner, secure_registry: RegistryServer, tmp_path: Path) -> None:
    reg = secure_registry
    bin_dir = tmp_path / "helpers"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-wasmtest"
    helper.write_text(CRED_HELPER)
    helper.chmod(0o755)
    wasm_oci.env["PATH"] = f"{bin_dir}:{wasm_oci.env['PATH']}"
    config = Path(wasm_oci.env["DOCKER_CONFIG"]) / "config.json"
    config.write_text(json.dumps({"credHelpers": {reg.host: "wasmtest"}}))

    wasm_oci("login", reg.host, "--ca-file", reg.ca_cert, "-u", reg.username, "-p", reg.password)
    assert json.loads((bin_dir / "secrets.json").read_text()) == {reg.host: [reg.username, reg.password]}
    assert "auths" not in json.loads(config.read_text())
    wasm_oci("push", HELLO, f"{reg.host}/secure/helper:1", "--ca-file", reg.ca_cert)

    config.write_text(json.dumps({"credsStore": "wasmtest"}))
    assert wasm_oci("inspect", f"{reg.host}/secure/helper:1", "--ca-file", reg.ca_cert).returncode == 0
    wasm_oci("logout", reg.host)
    assert json.loads((bin_dir / "secrets.json").read_text()) == {}


def test_bearer_token_flow(wasm_oci: ToolRunner, token_registry: RegistryServer, tmp_path: Path) -> None:
    reg = token_registry
    assert reg.token_server is not None
    ref = f"{reg.host}/tokens/hello:1"
    anonymous = wasm_oci("push", HELLO, ref, "--plain-http", check=False)
    assert anonymous.returncode == 7, anonymous.stderr
    wrong = wasm_oci("push", HELLO, ref, "--plain-http", "-u", reg.username, "-p", "wrong", check=False)
    assert wrong.returncode == 7
    assert "credentials rejected by token service" in wrong.stderr
    before = len(reg.token_server.requests)
    wasm_oci("push", HELLO, ref, "--plain-http", "-u", reg.username, "-p", reg.password)
    granted = [
        set(scope.rsplit(":", 1)[1].split(","))
        for request in reg.token_server.requests[before:]
        for scope in request["scope"]
        if scope.startswith("repository:tokens/hello:")
    ]
    assert {"pull", "push"} in granted, reg.token_server.requests[before:]
    out = tmp_path / "t.wasm"
    wasm_oci("pull", ref, "--plain-http", "-u", reg.username, "-p", reg.password, "-o", out)
    assert out.read_bytes() == HELLO.read_bytes()


def test_oras_py_operations_run_through_our_auth(private_home: Path, secure_registry: RegistryServer) -> None:
    """OrasRepository extends oras-py's Registry: its inherited calls get Basic auth, CA and error mapping."""
    from wasm_oci.oci import distribution as api
    from wasm_oci.oci.options import RegistryOptions
    from wasm_oci.oci.oras_compat import OrasRepository
    from wasm_oci.oci.reference import parse

    reg = secure_registry
    options = RegistryOptions(ca_file=reg.ca_cert, username=reg.username, password=reg.password)
    for tag in ("a", "b"):
        api.push(str(HELLO), f"{reg.host}/secure/oras-py:{tag}", options, options)
    repo = OrasRepository(parse(f"{reg.host}/secure/oras-py:a"), options)  # type: ignore[arg-type]
    assert sorted(repo.get_tags(f"{reg.host}/secure/oras-py")) == ["a", "b"]


def test_one_token_per_scope_for_parallel_transfers(wasm_oci: ToolRunner, token_registry: RegistryServer, tmp_path: Path) -> None:
    """The blobs of one artifact move in parallel: they share a token per scope instead of each
    answering its own first challenge at the token service."""
    reg = token_registry
    assert reg.token_server is not None
    ref = f"{reg.host}/tokens/single-flight:1"
    login = ("--plain-http", "-u", reg.username, "-p", reg.password)
    before = len(reg.token_server.requests)
    wasm_oci("push", HELLO, ref, *login)
    pushed = [request["scope"] for request in reg.token_server.requests[before:]]
    assert len(pushed) == len({tuple(scopes) for scopes in pushed}), pushed
    before = len(reg.token_server.requests)
    wasm_oci("pull", ref, *login, "-o", tmp_path / "t.wasm")
    pulled = [request["scope"] for request in reg.token_server.requests[before:]]
    assert len(pulled) == 1, pulled
