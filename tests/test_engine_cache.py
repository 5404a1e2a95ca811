"""The precompile cache: hit, miss, and entries that are corrupt, renamed or built for another
engine, all with real wasmtime artifacts; and what a hit buys."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest
import wasmtime
import wasmtime.component

from wasm_oci.engine import Engine, RunSpec
from wasm_oci.engine.cache import CompileCache
from wasm_oci.oci import digest as digests

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HELLO = (EXAMPLES / "hello" / "hello.wasm").read_bytes()
MODULE = (EXAMPLES / "module" / "hello-module.wasm").read_bytes()
SPIN = (EXAMPLES / "spin" / "spin.wasm").read_bytes()


def entry(engine: Engine, wasm: bytes, kind: str = "component") -> Path:
    return engine.loader.cache.path(engine.loader.cache_key(digests.of_bytes(wasm), kind))  # type: ignore[arg-type]


def load_state(cache: Path, wasm: bytes = HELLO) -> str:
    """Load with a fresh Engine (an empty memory cache), as a new process would; check it runs."""
    engine = Engine(cache_dir=cache)
    program = engine.load(wasm, name="guest.wasm")
    assert engine.run(program, RunSpec()).status == 0
    return program.cache


def test_miss_then_disk_hit_then_memory_hit(tmp_path: Path) -> None:
    assert load_state(tmp_path) == "miss"
    assert load_state(tmp_path) == "hit"
    engine = Engine(cache_dir=tmp_path)
    assert engine.load(HELLO).cache == "hit"
    assert engine.load(HELLO).cache == "memory"
    assert load_state(tmp_path, MODULE) == "miss"
    assert load_state(tmp_path, MODULE) == "hit"


def test_key_covers_the_wasm_digest_and_the_wasmtime_version(tmp_path: Path) -> None:
    engine = Engine(cache_dir=tmp_path)
    engine.load(HELLO)
    assert entry(engine, HELLO).is_file()
    assert entry(engine, HELLO) != entry(engine, MODULE)
    from importlib.metadata import version

    assert f"wasmtime {version('wasmtime')}" in engine.loader.build
    assert any('"epoch_interruption": true' in part for part in engine.loader.build)


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "empty"])
def test_a_damaged_entry_is_detected_and_rebuilt(tmp_path: Path, damage: str) -> None:
    load_state(tmp_path)
    path = entry(Engine(cache_dir=tmp_path), HELLO)
    data = bytearray(path.read_bytes())
    if damage == "flip a byte":
        data[len(data) // 2] ^= 0x40
    elif damage == "truncate":
        del data[len(data) // 2 :]
    else:
        data.clear()
    path.write_bytes(bytes(data))
    assert load_state(tmp_path) == "rebuilt"
    assert load_state(tmp_path) == "hit"  # the rebuilt entry is whole again


def test_an_entry_under_another_key_is_not_trusted(tmp_path: Path) -> None:
    engine = Engine(cache_dir=tmp_path)
    engine.load(SPIN)
    entry(engine, SPIN).rename(entry(engine, HELLO))  # a valid component artifact, of another program
    assert load_state(tmp_path) == "rebuilt"


def test_an_artifact_wasmtime_refuses_is_rebuilt(tmp_path: Path) -> None:
    """A well-formed entry holding an artifact built with other engine settings (no epoch
    interruption) or holding garbage: the checksum passes, wasmtime's own check does not."""
    other = wasmtime.Engine(wasmtime.Config())
    foreign = bytes(wasmtime.component.Component(other, HELLO).serialize())
    engine = Engine(cache_dir=tmp_path)
    key = engine.loader.cache_key(digests.of_bytes(HELLO), "component")
    for artifact in (foreign, b"\x7fELF not really"):
        CompileCache(tmp_path).put(key, artifact)
        assert load_state(tmp_path) == "rebuilt"
        assert load_state(tmp_path) == "hit"


def test_unwritable_cache_still_runs(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    assert load_state(blocker / "cache") == "miss"
    assert load_state(blocker / "cache") == "miss"


def test_cache_hit_makes_load_and_instantiate_and_enter_sub_millisecond(tmp_path: Path) -> None:
    assert load_state(tmp_path) == "miss"
    compile_time = Engine(cache_dir=tmp_path / "cold").load(HELLO).load_seconds
    engine = Engine(cache_dir=tmp_path)
    hit = engine.load(HELLO)
    assert hit.cache == "hit"
    runs = []
    for _ in range(200):
        began = time.perf_counter()
        engine.run(hit, RunSpec(args=["hello"]))
        runs.append(time.perf_counter() - began)
    median = statistics.median(runs)
    print(f"compile {compile_time * 1e3:.2f} ms, disk hit {hit.load_seconds * 1e3:.3f} ms, instantiate+run median {median * 1e3:.3f} ms")
    assert hit.load_seconds < compile_time
    assert median < 1e-3
