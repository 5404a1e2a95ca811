"""Push and pull of Wasm components through a local registry: `wasm-oci` vs the Go `oras` CLI.

Both are whole CLI invocations (process start included, as a CI job sees them), pushing a
fresh repository each run so no blob is skipped, and pulling into an empty destination so
every byte is downloaded (and, for wasm-oci, digest-verified into its store).

    .venv/bin/python bench/distribution.py [--sizes 1,50] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from common import REPO, Comparison, alternate, markdown, timed
from services.registry import plain_registry
from services.tools import find_tool
from services.wasmgen import padded_component


def measure(size_mb: int, runs: int, host: str, work: Path) -> list[Comparison]:
    wasm = work / f"c{size_mb}.wasm"
    wasm.write_bytes(padded_component(size_mb * 1_000_000, f"bench-{size_mb}".encode()))
    ours_cli = str(Path(sys.executable).with_name("wasm-oci"))
    oras = find_tool("oras")
    env = {**os.environ, "WASM_OCI_HOME": str(work / "home"), "DOCKER_CONFIG": str(work / "docker")}
    timed([ours_cli, "package", wasm, "-t", f"bench{size_mb}:1", "--created", "0"], env)

    def push_ours(i: int) -> float:
        return timed([ours_cli, "push", f"bench{size_mb}:1", f"{host}/ours-{size_mb}-{i}/c:1", "--plain-http"], env)

    def push_oras(i: int) -> float:
        return timed([oras, "push", "--plain-http", f"{host}/oras-{size_mb}-{i}/c:1", f"{wasm.name}:application/wasm"], env, cwd=work)

    def pull_ours(i: int) -> float:
        shutil.rmtree(work / "home" / "store", ignore_errors=True)
        return timed([ours_cli, "pull", f"{host}/ours-{size_mb}-{i}/c:1", "--plain-http", "-o", work / f"out-ours-{i}.wasm"], env)

    def pull_oras(i: int) -> float:
        return timed([oras, "pull", "--plain-http", f"{host}/oras-{size_mb}-{i}/c:1", "-o", work / f"out-oras-{i}"], env)

    pushes = alternate(runs, push_ours, push_oras)
    pulls = alternate(runs, pull_ours, pull_oras)
    return [
        Comparison(f"push {size_mb} MB component", *pushes, "oras push"),
        Comparison(f"pull {size_mb} MB component", *pulls, "oras pull"),
    ]


def run(sizes: list[int], runs: int) -> list[Comparison]:
    with tempfile.TemporaryDirectory(prefix="wasm-oci-bench-") as tmp:
        work = Path(tmp)
        with plain_registry(work / "registry") as registry:
            rows = []
            for size in sizes:
                rows += measure(size, runs, registry.host, work)
            return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,50", help="component sizes in MB, comma separated")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(markdown(run([int(s) for s in args.sizes.split(",")], args.runs)))


if __name__ == "__main__":
    os.chdir(REPO)
    main()
