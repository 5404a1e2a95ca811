"""Property-based fuzzing of every parser that reads input from outside the process.

The property, for each target: the call returns, or raises a `WasmOciError` (bundle and
simple-signing readers: `ValueError`, their documented contract, which `discover` turns into
candidates), and nothing else; each call finishes within a bound (a SIGALRM watchdog, so a hang
fails the example instead of the run); a failed pull/copy leaves no tag and no output file;
nothing unsigned is ever reported verified.

Targets: reference.parse; OCI layouts (inspect, pull -o, copy) built from a valid layout by JSON
mutations; manifests/configs in a MemoryStore through artifact.read and copy_graph; trust
policies (policy.parse, policy.load); sigstore bundles, in-toto statements and simple-signing
payloads; discover.find / trust.verify over hostile referrers; key files (load_public,
load_private, with cosign's encrypted format and absurd scrypt parameters).

Profiles (HYPOTHESIS_PROFILE): `ci` (default) keeps the whole file under ~2 minutes with a fixed
number of examples per target; `long` runs 20x the examples with a looser per-example deadline:
    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest -q tests/test_fuzz_inputs.py
The number of examples each target ran is printed at the end ("fuzz: examples per target").
"""

from __future__ import annotations

import base64
import contextlib
import copy as copying
import hashlib
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from services.hostile_registry import OCI_INDEX, OCI_MANIFEST, hello_artifact  # noqa: E402
from wasm_oci.errors import WasmOciError  # noqa: E402

# == profiles ======================================================================================
_COMMON = {
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
    "database": None,
    "print_blob": True,
}
settings.register_profile("ci", max_examples=100, deadline=None, **_COMMON)
settings.register_profile("long", max_examples=2000, deadline=None, **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
SCALE = 20 if PROFILE == "long" else 1


def examples(n: int) -> settings:
    """Per-target example counts (CI numbers; `long` multiplies them)."""
    return settings(max_examples=n * SCALE)


CALL_BOUND = 5.0  # seconds for any single call into the product
MEMORY_GROWTH_BOUND = 300 << 20
"""Peak-RSS growth one call may cause: above the 256 MiB a legitimate scrypt (N=2**18, r=8) needs."""
MiB = 1 << 20

# == bookkeeping: examples per target, printed at the end ==========================================
COUNTS: Counter[str] = Counter()
RAISED: Counter[str] = Counter()  # of those, how many ended in an (allowed) error


class _Summary:
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if COUNTS:
            terminalreporter.section(f"fuzz: examples per target (profile {PROFILE})")
            terminalreporter.write_line(f"{'target':<36} {'calls':>7} {'raised':>7}")
            for target, n in sorted(COUNTS.items()):
                terminalreporter.write_line(f"{target:<36} {n:7d} {RAISED[target]:7d}")


@pytest.fixture(scope="module", autouse=True)
def _examples_summary(request: pytest.FixtureRequest) -> Iterator[None]:
    if not request.config.pluginmanager.has_plugin("fuzz-examples-summary"):
        request.config.pluginmanager.register(_Summary(), "fuzz-examples-summary")
    return


@pytest.fixture(scope="module", autouse=True)
def _private_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Own store, no trust policy, no Docker config: the fuzzed calls never touch the user's."""
    home = tmp_path_factory.mktemp("fuzz-home")
    saved = {k: os.environ.get(k) for k in ("WASM_OCI_HOME", "HOME", "DOCKER_CONFIG", "WASM_OCI_POLICY", "XDG_CONFIG_HOME")}
    os.environ.update(WASM_OCI_HOME=str(home / "data"), HOME=str(home), DOCKER_CONFIG=str(home / ".docker"))
    os.environ.pop("WASM_OCI_POLICY", None)
    os.environ.pop("XDG_CONFIG_HOME", None)
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# == the rule ======================================================================================
class Hang(BaseException):
    """Raised by the watchdog inside a call that overran CALL_BOUND (BaseException: not swallowed as an error)."""


@contextlib.contextmanager
def watchdog(seconds: float, what: str) -> Iterator[None]:
    def fire(_sig: int, _frame: Any) -> None:
        raise Hang(f"{what}: still running after {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


PRODUCT_DIRS = tuple(str(Path(__file__).resolve().parents[1] / d) + os.sep for d in ("oci", "signing", "cli", "wasm_oci", "engine"))


def escape_point(exc: BaseException) -> str:
    """The innermost product frame the exception passed through: where it should have been caught."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(PRODUCT_DIRS)]
    if not frames:
        return "no product frame"
    f = frames[-1]
    return f"{os.path.relpath(f.filename, Path(__file__).resolve().parents[1])}:{f.lineno} ({f.line})"


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bounded(
    target: str, fn: Callable[[], Any], allowed: tuple[type[BaseException], ...] = (WasmOciError,), seconds: float = CALL_BOUND
) -> tuple[Any, BaseException | None]:
    """Call fn: its result, or the allowed exception it raised; anything else fails the example."""
    COUNTS[target] += 1
    before = _rss()
    try:
        with watchdog(seconds, target):
            return fn(), None
    except allowed as exc:
        RAISED[target] += 1
        return None, exc
    except Hang as exc:
        raise AssertionError(str(exc)) from None
    except Exception as exc:
        raise AssertionError(
            f"{target}: {type(exc).__module__}.{type(exc).__name__} escaped at {escape_point(exc)}: {str(exc)[:200]}"
        ) from exc
    finally:
        grown = _rss() - before
        assert grown < MEMORY_GROWTH_BOUND, f"{target}: peak RSS grew by {grown / MiB:.0f} MiB in one call"


# == JSON strategies ===============================================================================
DIGEST = "sha256:" + "0" * 64
HOSTILE_STRINGS = [
    "",
    " ",
    "\x00",
    "\n",
    "sha256:../../x",
    "sha256:../../../../../../tmp/pwn",
    DIGEST,
    "sha256:" + "A" * 64,
    "sha512:" + "1" * 128,
    "md5:d41d8cd98f00b204e9800998ecf8427e",
    "../../../../etc/passwd",
    "/dev/zero",
    OCI_MANIFEST,
    OCI_INDEX,
    "application/wasm",
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.wasm.config.v0+json",
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "wasm",
    "wasip2",
    "a" * 5000,
    "\ud800",
    "é",
    "enforce",
    "warn",
    "off",
    "127.0.0.1:5000",
    "https://in-toto.io/Statement/v1",
    "https://sigstore.dev/cosign/sign/v1",
    "application/vnd.in-toto+json",
    "cosign container image signature",
]
KEYS = [
    "mediaType",
    "digest",
    "size",
    "annotations",
    "platform",
    "manifests",
    "layers",
    "config",
    "subject",
    "schemaVersion",
    "artifactType",
    "os",
    "architecture",
    "component",
    "imports",
    "exports",
    "target",
    "Labels",
    "Entrypoint",
    "Env",
    "imageLayoutVersion",
    "org.opencontainers.image.ref.name",
    "org.opencontainers.image.title",
    "rules",
    "default",
    "scope",
    "mode",
    "keys",
    "critical",
    "image",
    "docker-manifest-digest",
    "type",
    "dsseEnvelope",
    "payload",
    "payloadType",
    "signatures",
    "sig",
    "verificationMaterial",
    "publicKey",
    "hint",
    "_type",
    "predicateType",
    "subject",
    "kdf",
    "params",
    "N",
    "r",
    "p",
    "salt",
    "cipher",
    "nonce",
    "ciphertext",
    "name",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**53, 2**53 + 1, 2**63, 2**64, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=16),
    st.sampled_from(HOSTILE_STRINGS),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children, max_size=4),
    ),
    max_leaves=10,
)
raw_bytes = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b'""',
            b"{",
            b"[" * 100_000 + b"]" * 100_000,
            b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
            b"\xff\xfe{}",
            "{}".encode("utf-16"),
            b'{"a":1,"a":2}',
            b"9" * 5000,
            b"NaN",
            b"\x00" * 64,
        ]
    ),
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, doc: Any, max_mutations: int = 3) -> Any:
    """`doc` with 1..n mutations: a value replaced by hostile JSON, a key dropped or added, a list entry duplicated."""
    doc = copying.deepcopy(doc)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "drop", "add", "duplicate"]))
        if not path:
            if action == "replace":
                doc = draw(json_values)
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        if action == "replace":
            parent[last] = draw(json_values)
        elif action == "drop":
            del parent[last]
        elif action == "add" and isinstance(parent[last], dict):
            parent[last][draw(st.sampled_from(KEYS))] = draw(json_values)
        elif action == "duplicate" and isinstance(parent[last], list) and parent[last]:
            parent[last] = parent[last] * draw(st.sampled_from([2, 100, 2000]))
    return doc


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode("utf-8", "surrogatepass")


# == 1. references =================================================================================
hosts = st.one_of(
    st.sampled_from(
        [
            "localhost",
            "127.0.0.1:5000",
            "[::1]:5000",
            "[::1",
            "a..b:99999",
            "registry.example",
            "x:0",
            "x:65536",
            "-a.b",
            "[]:1",
            "[zz]",
            "a.b:",
            "docker.io",
            "ÿ.com",
            "a" * 300 + ".com",
        ]
    ),
    st.from_regex(r"[a-z0-9.\-\[\]:]{1,30}", fullmatch=True),
)
repos = st.one_of(st.from_regex(r"[a-z0-9._/\-]{0,40}", fullmatch=True), st.text(max_size=20))
tags = st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_.\-]{0,140}", fullmatch=True), st.text(max_size=10))
digests = st.one_of(st.none(), st.sampled_from(HOSTILE_STRINGS), st.text(max_size=80))


@st.composite
def reference_texts(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["registry", "layout", "local", "text"]))
    if kind == "text":
        return draw(st.text(max_size=300))
    tag, digest = draw(tags), draw(digests)
    tail = (f":{tag}" if tag is not None else "") + (f"@{digest}" if digest is not None else "")
    if kind == "layout":
        path = draw(
            st.one_of(
                st.text(max_size=40),
                st.sampled_from(
                    ["/" + "a" * 5000, "/" + "a/" * 3000, "/tmp/" + "b" * 300, "/dev/null", "/proc/self/fd/0", "\x00", ".", ""]
                ),
            )
        )
        return "oci:" + path + tail
    if kind == "registry":
        return f"{draw(hosts)}/{draw(repos)}{tail}"
    return draw(repos) + tail


@examples(1000)
@given(reference_texts())
@example("oci:/" + "a" * 5000 + ":v1")
@example("oci:/" + "a" * 300 + "/b:v1")
@example("[::1/x")
@example("a..b:99999/x")
@example("oci:\x00:v")
@example("localhost/" + "a/" * 5000)
@example("x" * 100_000)
def test_reference_parse(text: str) -> None:
    from wasm_oci.oci import reference

    result, _ = bounded("reference.parse", lambda: reference.parse(text))
    if result is not None:
        str(result)  # a parsed reference can always be shown


# == 2. OCI layouts ================================================================================
def _hello_docs() -> tuple[dict[str, Any], dict[str, Any], bytes]:
    art = hello_artifact()
    return json.loads(art.manifest), json.loads(art.config), art.layer


def _desc(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data), **extra}


@st.composite
def layouts(draw: st.DrawFn) -> dict[str, Any]:
    """A plan for a layout: which document is mutated (and whether digests are then made consistent) or which file is broken."""
    manifest, config, _layer = _hello_docs()
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"annotations": {"org.opencontainers.image.ref.name": "v1"}}]}
    target = draw(st.sampled_from(["index", "manifest", "config", "oci-layout", "file", "raw"]))
    plan: dict[str, Any] = {
        "target": target,
        "manifest": manifest,
        "config": config,
        "index": index,
        "oci-layout": {"imageLayoutVersion": "1.0.0"},
        "rehash": draw(st.booleans()),
        "file": None,
        "raw": None,
    }
    if target in ("index", "manifest", "config", "oci-layout"):
        plan[target] = draw(mutated(plan[target] if target != "index" else {**index, "manifests": [{"placeholder": True}]}))
    elif target == "file":
        plan["file"] = (
            draw(st.sampled_from(["oci-layout", "index.json", "manifest", "config", "layer"])),
            draw(st.sampled_from(["delete", "directory", "truncate", "dev_zero", "empty", "symlink_loop", "unreadable"])),
        )
    else:
        plan["raw"] = (draw(st.sampled_from(["index.json", "manifest", "config", "oci-layout"])), draw(raw_bytes))
    return plan


def build_layout(root: Path, plan: dict[str, Any]) -> None:
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer = hello_artifact().layer

    def put(data: bytes) -> Path:
        path = blobs / hashlib.sha256(data).hexdigest()
        path.write_bytes(data)
        return path

    paths = {"layer": put(layer)}
    config_bytes = encode(plan["config"])
    if plan["target"] == "raw" and plan["raw"][0] == "config":
        config_bytes = plan["raw"][1]
    paths["config"] = put(config_bytes)
    manifest = plan["manifest"]
    if plan["rehash"] and plan["target"] == "config" and isinstance(manifest, dict) and isinstance(manifest.get("config"), dict):
        manifest = {
            **manifest,
            "config": {**manifest["config"], "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(), "size": len(config_bytes)},
        }
    manifest_bytes = encode(manifest)
    if plan["target"] == "raw" and plan["raw"][0] == "manifest":
        manifest_bytes = plan["raw"][1]
    paths["manifest"] = put(manifest_bytes)
    index = plan["index"]
    entry = _desc(
        OCI_MANIFEST,
        manifest_bytes if (plan["rehash"] or plan["target"] != "manifest") else hello_artifact().manifest,
        annotations={"org.opencontainers.image.ref.name": "v1"},
    )
    if plan["target"] == "index":
        # the mutated index keeps a real entry for `v1` next to the mutations, so parsing reaches them
        if isinstance(index, dict) and isinstance(index.get("manifests"), list):
            index["manifests"] = [entry if m == {"placeholder": True} else m for m in index["manifests"]]
    else:
        index = {**index, "manifests": [entry]}
    index_bytes = encode(index)
    if plan["target"] == "raw" and plan["raw"][0] == "index.json":
        index_bytes = plan["raw"][1]
    (root / "index.json").write_bytes(index_bytes)
    layout_bytes = encode(plan["oci-layout"])
    if plan["target"] == "raw" and plan["raw"][0] == "oci-layout":
        layout_bytes = plan["raw"][1]
    (root / "oci-layout").write_bytes(layout_bytes)
    paths["oci-layout"], paths["index.json"] = root / "oci-layout", root / "index.json"
    if plan["file"]:
        name, how = plan["file"]
        path = paths[name]
        if how == "delete":
            path.unlink()
        elif how == "directory":
            path.unlink()
            path.mkdir()
        elif how == "truncate":
            path.write_bytes(path.read_bytes()[:7])
        elif how == "dev_zero":
            path.unlink()
            path.symlink_to("/dev/zero")
        elif how == "empty":
            path.write_bytes(b"")
        elif how == "symlink_loop":
            path.unlink()
            path.symlink_to(path)
        elif how == "unreadable":
            path.chmod(0)


def layout_state_problems(root: Path, allow_tags: bool) -> list[str]:
    problems = []
    if not root.exists():
        return problems
    for path in root.rglob("*"):
        if path.is_file() and path.name.endswith(".tmp"):
            problems.append(f"temp file left: {path}")
    index = root / "index.json"
    if not allow_tags and index.exists():
        listed = json.loads(index.read_text()).get("manifests") or []
        if listed:
            problems.append(f"{index} has {len(listed)} tag(s) after a failed copy")
    blobs = root / "blobs" / "sha256"
    if blobs.exists():
        for path in blobs.iterdir():
            if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() != path.name:
                problems.append(f"unverified blob {path}")
    return problems


@examples(250)
@given(layouts(), st.one_of(st.none(), st.builds(encode, mutated({"schemaVersion": 2, "manifests": []})), raw_bytes))
def test_layouts(plan: dict[str, Any], other_index: bytes | None) -> None:
    """Source layout mutated; the copy's destination is new, or an existing layout whose index.json is hostile."""
    from wasm_oci.oci import distribution as api

    work = Path(tempfile.mkdtemp(prefix="fuzz-layout-"))
    try:
        src, other, out = work / "src", work / "other", work / "out" / "app.wasm"
        build_layout(src, plan)
        out.parent.mkdir()
        if other_index is not None:
            other.mkdir()
            (other / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
            (other / "index.json").write_bytes(other_index)
        bounded("layout:inspect", lambda: api.inspect(f"oci:{src}:v1"))
        pulled, _ = bounded("layout:pull -o", lambda: api.pull(f"oci:{src}:v1", output=out))
        copied, _ = bounded("layout:copy", lambda: api.copy(f"oci:{src}:v1", f"oci:{other}:v1"))
        problems = layout_state_problems(other, copied is not None or other_index is not None)
        if copied is None and other_index is not None and (other / "index.json").read_bytes() != other_index:
            problems.append("a failed copy rewrote the destination's index.json")
        if pulled is None:
            if out.exists():
                problems.append("output file exists after a failed pull")
        else:
            data = out.read_bytes()
            if not (src / "blobs" / "sha256" / hashlib.sha256(data).hexdigest()).is_file():
                problems.append("pull -o wrote content that is no blob of the source")
        strays = [p.name for p in out.parent.iterdir() if p != out]
        if strays:
            problems.append(f"stray files next to the output: {strays}")
        assert not problems, "; ".join(problems)
    finally:
        for path in work.rglob("*"):
            with contextlib.suppress(OSError):
                if not path.is_symlink():
                    path.chmod(0o700 if path.is_dir() else 0o600)
        shutil.rmtree(work, ignore_errors=True)


def test_layout_fifo_blob_is_bounded(tmp_path: Path) -> None:
    """A FIFO where a blob should be: opening it blocks for ever unless the store refuses non-files."""
    from wasm_oci.oci import distribution as api

    manifest, config, _ = _hello_docs()
    plan = {
        "target": "none",
        "manifest": manifest,
        "config": config,
        "oci-layout": {"imageLayoutVersion": "1.0.0"},
        "index": {"schemaVersion": 2, "manifests": []},
        "rehash": False,
        "file": None,
        "raw": None,
    }
    src = tmp_path / "src"
    build_layout(src, plan)
    layer = src / "blobs" / "sha256" / hashlib.sha256(hello_artifact().layer).hexdigest()
    layer.unlink()
    os.mkfifo(layer)
    bounded("layout:fifo blob", lambda: api.pull(f"oci:{src}:v1", output=tmp_path / "out.wasm"), seconds=5)
    assert not (tmp_path / "out.wasm").exists()


# == 3. manifests and configs through a MemoryStore ================================================
@st.composite
def stored_artifacts(draw: st.DrawFn) -> tuple[Any, Any]:
    from wasm_oci.oci import mediatypes
    from wasm_oci.oci.descriptor import Descriptor
    from wasm_oci.oci.memory_store import MemoryStore

    manifest, config, layer = _hello_docs()
    store = MemoryStore()
    store._blobs["sha256:" + hashlib.sha256(layer).hexdigest()] = layer
    config_bytes = draw(st.one_of(st.just(encode(config)), st.builds(encode, mutated(config)), raw_bytes))
    config_type = draw(st.sampled_from([mediatypes.OCI_IMAGE_CONFIG, mediatypes.WASM_CONFIG, mediatypes.OCI_EMPTY, "application/x-other"]))
    store._blobs["sha256:" + hashlib.sha256(config_bytes).hexdigest()] = config_bytes
    manifest["config"] = _desc(config_type, config_bytes)
    kind = draw(st.sampled_from(["manifest", "index"]))
    doc = draw(mutated(manifest)) if draw(st.booleans()) else manifest
    data = draw(st.one_of(st.just(encode(doc)), raw_bytes)) if draw(st.integers(0, 9)) == 0 else encode(doc)
    if kind == "index":
        store._blobs["sha256:" + hashlib.sha256(data).hexdigest()] = data
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [_desc(OCI_MANIFEST, data, platform={"architecture": "wasm", "os": "wasip2"})],
        }
        index = draw(mutated(index)) if draw(st.booleans()) else index
        data = encode(index)
    media_type = draw(
        st.sampled_from([OCI_MANIFEST, OCI_INDEX, mediatypes.DOCKER_MANIFEST, mediatypes.DOCKER_MANIFEST_LIST, "application/json"])
    )
    desc = Descriptor.for_bytes(media_type, data)
    store._blobs[desc.digest] = data
    return store, desc


@examples(400)
@given(stored_artifacts())
def test_artifact_read_and_copy(planted: tuple[Any, Any]) -> None:
    from wasm_oci.oci.artifact import read
    from wasm_oci.oci.copy import copy_graph
    from wasm_oci.oci.memory_store import MemoryStore

    store, desc = planted
    art, _ = bounded("artifact.read", lambda: read(store, desc))
    if art is not None:
        assert art.layer.media_type  # a reported artifact has a wasm layer
    dst = MemoryStore()
    copied, _ = bounded("copy_graph (memory)", lambda: copy_graph(store, dst, desc, "t"))
    if copied is None:
        assert "t" not in dst._tags, "a failed copy tagged its root"


# == 4. trust policies =============================================================================
VALID_POLICY = {
    "default": {"mode": "off"},
    "rules": [
        {"scope": "registry.example.com/acme", "mode": "enforce", "keys": ["acme.pub"]},
        {"scope": "127.0.0.1:5000", "mode": "warn", "keys": []},
    ],
}


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wasm_oci.signing import keys

    base = tmp_path_factory.mktemp("policy")
    (base / "acme.pub").write_bytes(keys.generate().public().pem())
    (base / "dir.pub").mkdir()
    return base


@examples(600)
@given(st.one_of(mutated(VALID_POLICY, 4), json_values))
@example({"rules": [{"scope": "x", "mode": "enforce", "keys": ["/dev/zero"]}]})
@example({"rules": [{"scope": "x", "mode": "enforce", "keys": ["dir.pub", "\x00", "a" * 5000]}]})
@example({"rules": [{"scope": "x", "mode": "enforce", "keys": ["../" * 50 + "etc/passwd"]}]})
@example({"rules": [{"scope": 5, "mode": "enforce"}], "default": []})
def test_policy_parse(policy_dir: Path, doc: Any) -> None:
    from wasm_oci.signing import policy

    parsed, _ = bounded("policy.parse", lambda: policy.parse(doc, policy_dir / "policy.json"))
    if parsed is not None:
        assert parsed.default.mode in ("enforce", "warn", "off")


@examples(300)
@given(st.one_of(st.builds(encode, mutated(VALID_POLICY, 4)), raw_bytes))
def test_policy_load(policy_dir: Path, data: bytes) -> None:
    from wasm_oci.signing import policy

    with tempfile.NamedTemporaryFile(dir=policy_dir, suffix=".json", delete=False) as handle:
        handle.write(data)
    try:
        bounded("policy.load", lambda: policy.load(Path(handle.name)))
    finally:
        os.unlink(handle.name)


# == 5. bundles, statements, simple-signing payloads, and discovery ================================
@pytest.fixture(scope="module")
def signer() -> Any:
    from wasm_oci.signing import keys

    return keys.generate("fuzz signer")


def _valid_bundle_doc(key: Any, digest: str) -> dict[str, Any]:
    from wasm_oci.signing import sigstore_bundle as bundle

    return json.loads(bundle.build(key, digest))


def _statement(digest: str) -> dict[str, Any]:
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"digest": {"sha256": digest.split(":")[1]}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    }


@examples(400)
@given(st.data())
def test_bundle_read(signer: Any, data: st.DataObject) -> None:
    from wasm_oci.signing import sigstore_bundle as bundle

    doc = _valid_bundle_doc(signer, DIGEST)
    raw = data.draw(st.one_of(st.builds(encode, mutated(doc)), raw_bytes), label="bundle")
    envelope, _ = bounded("bundle.read", lambda: bundle.read(raw), allowed=(ValueError,))
    if envelope is not None:
        bounded("bundle.claimed_digests", lambda: bundle.claimed_digests(envelope), allowed=(ValueError,))


@examples(400)
@given(st.one_of(st.builds(encode, mutated(_statement(DIGEST))), raw_bytes))
def test_bundle_claimed_digests(payload: bytes) -> None:
    from wasm_oci.signing import sigstore_bundle as bundle

    envelope = bundle.Envelope(payload, bundle.IN_TOTO, (b"sig",), None)
    claims, _ = bounded("bundle.claimed_digests(statement)", lambda: bundle.claimed_digests(envelope), allowed=(ValueError,))
    if claims is not None:
        assert all(isinstance(c, str) for c in claims)


SIMPLE = {
    "critical": {
        "identity": {"docker-reference": "r/x"},
        "image": {"docker-manifest-digest": DIGEST},
        "type": "cosign container image signature",
    },
    "optional": None,
}


@examples(600)
@given(st.one_of(st.builds(encode, mutated(SIMPLE)), raw_bytes))
def test_simplesigning_claimed_digest(payload: bytes) -> None:
    from wasm_oci.signing import simplesigning

    claim, _ = bounded("simplesigning.claimed_digest", lambda: simplesigning.claimed_digest(payload), allowed=(ValueError,))
    if claim is not None:
        assert isinstance(claim, str)


@pytest.fixture(scope="module")
def unsigned_subject_store(signer: Any) -> tuple[Any, Any, Any]:
    """A MemoryStore where the subject is NOT signed: valid signatures of another manifest are
    planted under the subject's referrers tag and `.sig` tag. Built once (signing is randomized,
    and hypothesis needs the same draws to give the same store)."""
    from wasm_oci.oci.descriptor import Descriptor
    from wasm_oci.oci.memory_store import MemoryStore
    from wasm_oci.oci.reference import LayoutReference
    from wasm_oci.signing import attach, referrers, simplesigning

    art = hello_artifact()
    store = MemoryStore()
    subject = Descriptor.for_bytes(OCI_MANIFEST, art.manifest)
    store.push_manifest(subject, art.manifest, "v1")
    other_bytes = art.manifest.replace(b"2024-01-02", b"2025-01-02")
    other = Descriptor.for_bytes(OCI_MANIFEST, other_bytes)
    store.push_manifest(other, other_bytes, "other")
    ref = LayoutReference(Path("/nonexistent-fuzz-layout"), "v1")
    attach.sign(store, ref, other, signer)
    tags = store._tags
    tags[referrers.fallback_tag(subject.digest)] = tags[referrers.fallback_tag(other.digest)]
    tags[simplesigning.tag(subject.digest)] = tags[simplesigning.tag(other.digest)]
    return store, ref, subject


@st.composite
def hostile_signature_stores(draw: st.DrawFn, base: tuple[Any, Any, Any]) -> Any:
    """A copy of `base` with some planted documents mutated, kept reachable under their new digest or tampered in place."""
    from wasm_oci.oci.descriptor import Descriptor
    from wasm_oci.oci.memory_store import MemoryStore

    source, _ref, subject = base
    store = MemoryStore()
    store._blobs = dict(source._blobs)
    store._tags = dict(source._tags)
    blobs, tags = store._blobs, store._tags
    for _ in range(draw(st.integers(0, 3))):
        victim = draw(st.sampled_from(sorted(blobs)))
        if victim == subject.digest:
            continue
        try:
            doc = json.loads(blobs[victim])
        except (ValueError, RecursionError):
            continue
        new = draw(st.one_of(st.builds(encode, mutated(doc)), raw_bytes))
        new_digest = "sha256:" + hashlib.sha256(new).hexdigest()
        blobs[new_digest] = new
        if draw(st.booleans()):  # the old digest now serves the new bytes: tampering
            blobs[victim] = new
        for tag in sorted(tags):
            desc = tags[tag]
            if desc.digest == victim and draw(st.booleans()):
                tags[tag] = Descriptor(draw(st.sampled_from([desc.media_type, OCI_INDEX, OCI_MANIFEST])), new_digest, len(new))
    return store


@examples(400)
@given(st.data())
def test_discover_and_verify_never_accept_unsigned(signer: Any, unsigned_subject_store: tuple[Any, Any, Any], data: st.DataObject) -> None:
    from wasm_oci.signing import discover, trust

    _, ref, subject = unsigned_subject_store
    store = data.draw(hostile_signature_stores(unsigned_subject_store), label="store")
    bounded("discover.find", lambda: discover.find(store, ref, subject.digest))
    verification, _ = bounded("trust.verify", lambda: trust.verify(ref, store, subject, [signer.public()]))
    if verification is not None:
        assert not verification.verified, f"an unsigned subject was reported verified: {verification.verified}"


# == 6. key files ==================================================================================
@pytest.fixture(scope="module")
def key_material(signer: Any) -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    pem = signer.to_pem("pw").decode()
    body = "".join(pem.strip().splitlines()[1:-1])
    p384 = ec.generate_private_key(ec.SECP384R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return {
        "cosign_doc": json.loads(base64.b64decode(body)),
        "public": signer.public().pem(),
        "pkcs8": signer.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        "pkcs8_enc": signer.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
        ),
        "p384": p384.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        "p384_pub": p384.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "rsa_pub": rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    }


def cosign_pem(doc: Any, label: str = "ENCRYPTED SIGSTORE PRIVATE KEY") -> bytes:
    body = base64.b64encode(encode(doc)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


ABSURD_SCRYPT = [
    {"N": 2**40, "r": 8, "p": 1},
    {"N": 65536, "r": 2**20, "p": 1},
    {"N": 65536, "r": 8, "p": 2**30},
    {"N": 2**20, "r": 2**20, "p": 2**20},
    {"N": 2**62, "r": 1, "p": 1},
    {"N": 3, "r": 8, "p": 1},
    {"N": 0, "r": 0, "p": 0},
    {"N": -65536, "r": 8, "p": 1},
    {"N": 65536.0, "r": 8, "p": 1},
    {"N": "65536", "r": "8", "p": "1"},
    {"N": 2**20, "r": 8, "p": 1},
    {"N": True, "r": 8, "p": 1},
    {"N": 65536, "r": 8},
    {"N": 2**1000, "r": 8, "p": 1},
]


@st.composite
def private_key_files(draw: st.DrawFn, material: dict[str, Any]) -> bytes:
    kind = draw(st.sampled_from(["cosign", "cosign", "scrypt", "pem", "raw"]))
    if kind == "cosign":
        label = draw(st.sampled_from(["ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY"]))
        return cosign_pem(draw(mutated(material["cosign_doc"])), label)
    if kind == "scrypt":
        doc = copying.deepcopy(material["cosign_doc"])
        doc["kdf"]["params"] = draw(
            st.one_of(
                st.sampled_from(ABSURD_SCRYPT),
                st.fixed_dictionaries(
                    {
                        "N": st.sampled_from([2**k for k in (1, 4, 14, 16, 20, 24, 32, 40, 63)]),
                        "r": st.integers(-1, 2**21),
                        "p": st.integers(-1, 2**31),
                    }
                ),
            )
        )
        return cosign_pem(doc)
    if kind == "pem":
        pem = draw(st.sampled_from([material["pkcs8"], material["pkcs8_enc"], material["p384"], material["public"]])).decode()
        cut = draw(st.integers(0, len(pem)))
        junk = draw(st.sampled_from(["", "A", "====", "\x00", "Proc-Type: 4,ENCRYPTED\n", "-----END PRIVATE KEY-----", "é"]))
        return (pem[:cut] + junk + pem[cut:]).encode()
    return draw(raw_bytes)


@examples(80)
@given(st.data())
def test_load_private(tmp_path: Path, key_material: dict[str, Any], data: st.DataObject) -> None:
    from wasm_oci.signing import keys

    content = data.draw(private_key_files(key_material), label="key file")
    password = data.draw(st.sampled_from([None, "", "pw", "wrong"]), label="password")
    path = tmp_path / "fuzz.key"
    path.write_bytes(content)
    bounded("keys.load_private", lambda: keys.load_private(path, password))


@pytest.mark.parametrize("params", ABSURD_SCRYPT, ids=lambda p: "-".join(f"{k}{str(v)[:8]}" for k, v in p.items()))
def test_absurd_scrypt_parameters_refused_quickly(tmp_path: Path, key_material: dict[str, Any], params: dict[str, Any]) -> None:
    """cosign caps scrypt's cost; a key file naming N=2**40 or r=2**20 must be refused at once, not run."""
    from wasm_oci.errors import TrustConfigError
    from wasm_oci.signing import keys

    doc = copying.deepcopy(key_material["cosign_doc"])
    doc["kdf"]["params"] = params
    path = tmp_path / "absurd.key"
    path.write_bytes(cosign_pem(doc))
    _, error = bounded("keys.load_private (absurd scrypt)", lambda: keys.load_private(path, "pw"), seconds=2.0)
    assert isinstance(error, TrustConfigError), f"{params}: accepted or wrong error: {error!r}"


@examples(400)
@given(st.data())
def test_load_public(tmp_path: Path, key_material: dict[str, Any], data: st.DataObject) -> None:
    from wasm_oci.signing import keys

    base = data.draw(st.sampled_from([key_material["public"], key_material["p384_pub"], key_material["rsa_pub"], key_material["pkcs8"]]))
    text = base.decode()
    cut = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.one_of(st.text(max_size=10), st.sampled_from(["-----BEGIN PUBLIC KEY-----", "\x00", "A" * 2000])))
    content = data.draw(st.one_of(st.just((text[:cut] + junk + text[cut:]).encode()), raw_bytes), label="public key file")
    path = tmp_path / "fuzz.pub"
    path.write_bytes(content)
    bounded("keys.load_public", lambda: keys.load_public(path))


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/urandom", "/proc/self/mem", "/", "/nonexistent/x.pub", "\x00.pub", "a" * 5000])
def test_key_paths_that_are_not_files(special: str) -> None:
    from wasm_oci.signing import keys

    bounded("keys.load_public (special path)", lambda: keys.load_public(Path(special)))
    bounded("keys.load_private (special path)", lambda: keys.load_private(Path(special), "pw"))
