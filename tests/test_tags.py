"""`wasm-oci tags` / `api.tags`: a repository's tags through oras-py's paginated listing, on our
transport: against the real registry (plain, Basic auth, Bearer tokens), the peers' `crane ls`
and `oras repo tags`, a registry of our own that pages with `Link`, and hostile ones."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.hostile_registry import HostileRegistry, MiB
from services.registry import RegistryServer
from services.tools import ToolRunner
from services.wasmgen import HELLO
from wasm_oci import api
from wasm_oci.errors import MalformedContent, RegistryError
from wasm_oci.oci.options import RegistryOptions
from wasm_oci.oci.oras_compat import MAX_TAG_PAGES, MAX_TAGS

PLAIN = RegistryOptions(plain_http=True)
TAGS = ["1.0", "1.1", "latest", "rc_2", "v2.0.0-beta.1"]
BOUND = 20.0  # seconds any hostile case may take, the CLI's start included


def _push_tags(repo: str, tags: list[str], options: RegistryOptions = PLAIN) -> None:
    for tag in tags:
        api.push(str(HELLO), f"{repo}:{tag}", options, options)


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wasm-oci: error: "), result.stderr
    return lines[0].removeprefix("wasm-oci: error: ")


# -- the real registry ------------------------------------------------------------------------------
def test_tags_lists_exactly_what_was_pushed(private_home: Path, wasm_oci: ToolRunner, registry: RegistryServer) -> None:
    repo = f"{registry.host}/tags/listed"
    _push_tags(repo, TAGS)
    text = wasm_oci("tags", repo, "--plain-http", timeout=60)
    listed = text.stdout.splitlines()
    assert sorted(listed) == sorted(TAGS) and text.stderr == ""
    as_json = json.loads(wasm_oci("tags", repo, "--plain-http", "--format", "json", timeout=60).stdout)
    assert as_json == {"repository": repo, "tags": listed}  # the registry's order, both ways
    assert api.tags(repo, PLAIN) == listed


def test_unknown_and_empty_repositories(private_home: Path, wasm_oci: ToolRunner, registry: RegistryServer) -> None:
    unknown = wasm_oci("tags", f"{registry.host}/tags/never-pushed", "--plain-http", check=False, timeout=60)
    assert unknown.returncode == 5 and unknown.stdout == ""
    assert _error_line(unknown) == f"repository {registry.host}/tags/never-pushed not found"

    # A repository whose one manifest was deleted: the registry lists `"tags": null`, and so do we (nothing), as crane and oras.
    repo = f"{registry.host}/tags/emptied"
    digest = api.push(str(HELLO), f"{repo}:1", PLAIN, PLAIN).descriptor.digest
    request = urllib.request.Request(f"{registry.base_url}/v2/tags/emptied/manifests/{digest}", method="DELETE")
    with urllib.request.urlopen(request, timeout=30) as deleted:
        assert deleted.status == 202
    empty = wasm_oci("tags", repo, "--plain-http", timeout=60)
    assert (empty.stdout, empty.stderr) == ("", "")
    assert json.loads(wasm_oci("tags", repo, "--plain-http", "--format", "json", timeout=60).stdout)["tags"] == []


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("{host}/tags/listed:1.0", "names a tag or digest"),
        ("{host}/tags/listed@sha256:" + "0" * 64, "names a tag or digest"),
        ("hello", "is not a registry repository"),
        ("oci:./layout", "is not a registry repository"),
    ],
)
def test_a_reference_that_is_not_a_repository_is_a_usage_error(wasm_oci: ToolRunner, argument: str, message: str) -> None:
    result = wasm_oci("tags", argument.format(host="127.0.0.1:9"), "--plain-http", check=False, timeout=60)
    assert result.returncode == 2 and message in _error_line(result)


def test_tags_never_loads_oras_for_other_commands(tmp_path: Path) -> None:
    """The command's module (imported for `wasm-oci --help` too) leaves oras-py to `api.tags`."""
    probe = "import sys, wasm_oci.cli.registry_commands; print('oras' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "False", run.stderr


# -- peers ----------------------------------------------------------------------------------------------
def test_same_list_as_crane_ls_and_oras_repo_tags(
    private_home: Path, wasm_oci: ToolRunner, registry: RegistryServer, crane_cli: ToolRunner, oras_cli: ToolRunner
) -> None:
    repo = f"{registry.host}/tags/peers"
    _push_tags(repo, TAGS)
    ours = wasm_oci("tags", repo, "--plain-http", timeout=60).stdout.splitlines()
    assert crane_cli("ls", "--insecure", repo).stdout.splitlines() == ours
    assert sorted(oras_cli("repo", "tags", "--plain-http", repo).stdout.splitlines()) == sorted(ours)


# -- pagination -----------------------------------------------------------------------------------
@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[HostileRegistry]:
    with HostileRegistry() as reg:
        yield reg


def _tag_requests(reg: HostileRegistry) -> list[str]:
    return [seen.path for seen in reg.requests_seen() if "/tags/list" in seen.path]


def test_every_page_is_followed_once(private_home: Path, wasm_oci: ToolRunner, hostile: HostileRegistry) -> None:
    """distribution 2.8 (the registry above) answers every listing in one page, whatever `n`;
    this registry pages as distribution 3 and Docker Hub do: 7 tags a page, `Link` to the next."""
    art = hostile.seed_hello("seed")
    names = [f"t{n:03d}" for n in range(50)]
    for name in names:
        hostile.tags[name] = art.manifest_digest
    hostile.tags.pop("seed")
    hostile.params["tags_page"] = 7
    repo = f"{hostile.host}/acme/paged"
    assert api.tags(repo, PLAIN) == names
    pages = _tag_requests(hostile)
    assert len(pages) == 8 and len(set(pages)) == 8, pages
    assert wasm_oci("tags", repo, "--plain-http", timeout=60).stdout.splitlines() == names


def test_the_page_and_tag_caps_hold_exactly(private_home: Path, hostile: HostileRegistry) -> None:
    """An endless chain of new pages stops at MAX_TAG_PAGES requests; MAX_TAGS tags pass, one more does not."""
    hostile.mode, hostile.params["next"] = "pagination.tags", "chain"
    with pytest.raises(RegistryError, match=f"runs past {MAX_TAG_PAGES} pages"):
        api.tags(f"{hostile.host}/acme/chain", RegistryOptions(plain_http=True, deadline=BOUND))
    assert len(_tag_requests(hostile)) == MAX_TAG_PAGES

    hostile.params.clear()
    hostile.params["body"] = json.dumps({"tags": [f"t{n}" for n in range(MAX_TAGS)]}).encode()
    assert len(api.tags(f"{hostile.host}/acme/full", PLAIN)) == MAX_TAGS
    hostile.params["body"] = json.dumps({"tags": [f"t{n}" for n in range(MAX_TAGS + 1)]}).encode()
    with pytest.raises(MalformedContent, match=f"runs past {MAX_TAGS} tags"):
        api.tags(f"{hostile.host}/acme/over", PLAIN)


# -- hostile registries ---------------------------------------------------------------------------
HOSTILE = {
    # name: (mode, params, exit code, what the one line says)
    "self_linked_pages": ("pagination.tags", {"next": "self"}, 9, "pages back to"),
    "endless_pages": ("pagination.tags", {"next": "chain"}, 9, f"runs past {MAX_TAG_PAGES} pages"),
    "next_page_elsewhere": ("pagination.tags", {"next": "http://127.0.0.2:9/v2/acme/x/tags/list"}, 9, "continues on another host"),
    "next_page_ftp": ("pagination.tags", {"next": "ftp://127.0.0.1/x"}, 9, "continues on another host"),
    "over_the_tag_cap": (
        "pagination.tags",
        {"body": json.dumps({"tags": [f"t{n}" for n in range(MAX_TAGS + 1)]}).encode()},
        14,
        f"runs past {MAX_TAGS} tags",
    ),
    "not_json": ("pagination.tags", {"body": b"<html><body>Sign in</body></html>"}, 14, "is not valid JSON"),
    "html_content_type": ("pagination.tags", {"content_type": "text/html", "body": b"<html></html>"}, 14, "came as 'text/html', not JSON"),
    "json_array": ("pagination.tags", {"body": b'["1.0"]'}, 14, "is a JSON list, not an object"),
    "tags_not_a_list": ("pagination.tags", {"body": b'{"tags": "1.0"}'}, 14, "`tags` must be a list of strings"),
    "not_a_tag": ("pagination.tags", {"body": b'{"tags": ["1.0", "a\\nwasm-oci: ok"]}'}, 14, "which is not a tag"),
    "endless_body": ("bomb.endless", {"on": "tags", "content_type": "application/json", "total": 64 * MiB}, 14, "byte limit"),
    "stalls": ("slow.trickle", {"on": "tags", "headers": True}, 8, "did not finish within 3s (--registry-timeout)"),
    "error_500": ("transport.status", {"on": "tags", "status": 500}, 9, "UNKNOWN: hostile"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_registry_ends_in_one_line(case: str, wasm_oci: ToolRunner, hostile: HostileRegistry) -> None:
    hostile.mode, params, code, says = HOSTILE[case]
    hostile.params.update(params)
    start = time.monotonic()
    result = wasm_oci("tags", f"{hostile.host}/acme/hostile", "--plain-http", "--registry-timeout", "3", check=False, timeout=BOUND + 10)
    elapsed = time.monotonic() - start
    assert result.returncode == code and says in _error_line(result), (result.returncode, result.stderr)
    assert result.stdout == "" and elapsed < BOUND, elapsed


# -- credentials ----------------------------------------------------------------------------------
def test_basic_auth_with_the_saved_login(private_home: Path, wasm_oci: ToolRunner, secure_registry: RegistryServer) -> None:
    reg = secure_registry
    assert reg.username and reg.password and reg.ca_cert
    repo = f"{reg.host}/secure/tagged"
    _push_tags(repo, TAGS[:3], RegistryOptions(ca_file=reg.ca_cert, username=reg.username, password=reg.password))
    anonymous = wasm_oci("tags", repo, "--ca-file", reg.ca_cert, check=False, timeout=60)
    assert anonymous.returncode == 7 and _error_line(anonymous)
    wasm_oci("login", reg.host, "--ca-file", reg.ca_cert, "-u", reg.username, "--password-stdin", input=reg.password + "\n", timeout=60)
    assert sorted(wasm_oci("tags", repo, "--ca-file", reg.ca_cert, timeout=60).stdout.splitlines()) == sorted(TAGS[:3])


def test_bearer_token_flow(private_home: Path, wasm_oci: ToolRunner, token_registry: RegistryServer) -> None:
    reg = token_registry
    assert reg.token_server is not None and reg.username and reg.password
    repo = f"{reg.host}/tokens/tagged"
    _push_tags(repo, TAGS[:2], RegistryOptions(plain_http=True, username=reg.username, password=reg.password))
    anonymous = wasm_oci("tags", repo, "--plain-http", check=False, timeout=60)
    assert anonymous.returncode == 7 and _error_line(anonymous)
    before = len(reg.token_server.requests)
    listed = wasm_oci("tags", repo, "--plain-http", "-u", reg.username, "-p", reg.password, timeout=60).stdout.splitlines()
    assert sorted(listed) == sorted(TAGS[:2])
    scopes = {scope for request in reg.token_server.requests[before:] for scope in request["scope"]}
    assert scopes == {"repository:tokens/tagged:pull"}, scopes  # a listing asks to read, nothing more
