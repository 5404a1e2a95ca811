"""The containerd and Kubernetes walkthrough of examples/containerd, executed as written.

`walkthrough.sh` installs wasm-oci from this checkout into a fresh virtualenv (a regular,
non-editable install, as users get), writes the launcher onto a private containerd's PATH,
installs the sample shim.toml and policy.json, checks that containerd finds the shim, and runs
the hello example with ctr. It runs inside containerd's private mount namespace, where ctr's
FIFOs and the shim's /run/containerd are the ones containerd sees. The Kubernetes half:
the runtime table of containerd-config.toml is what tests/services/cri.py configures CRI with,
and runtimeclass.yaml must name it and run. examples/http-function/walkthrough.sh, an HTTP
function with ctr, runs the same way against a containerd with the shim installed.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.containerd import ContainerdServer
from services.cri import CriNode, cri_node, example_runtime
from services.registry import RegistryServer
from services.shim import ShimHarness, shim_harness
from services.tools import REPO_ROOT, tools_bin_dir
from wasm_oci.oci import reference
from wasm_oci.proto import cri_pb2 as cri
from wasm_oci.shim import config
from wasm_oci.signing import policy

pytestmark = [pytest.mark.containerd, pytest.mark.registry]

EXAMPLES = REPO_ROOT / "examples" / "containerd"
HTTP_FUNCTION = REPO_ROOT / "examples" / "http-function"


@pytest.fixture
def private_containerd(tmp_path: Path) -> Iterator[tuple[ContainerdServer, Path]]:
    """A containerd whose shims read the configuration the walkthrough installs into `etc`."""
    workdir = Path(tempfile.mkdtemp(prefix="wasm-oci-walk-"))
    etc = tmp_path / "etc"
    server = ContainerdServer(
        workdir=workdir,
        namespace="walkthrough",
        extra_env={
            "WASM_OCI_SHIM_CONFIG": str(etc / "shim.toml"),  # stands in for /etc/wasm-oci/shim.toml
            "WASM_OCI_HOME": str(workdir / "home"),
        },
    )
    try:
        server.start()
        yield server, etc
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_walkthrough_installs_and_runs_as_written(
    private_containerd: tuple[ContainerdServer, Path], registry: RegistryServer, tmp_path: Path
) -> None:
    server, etc = private_containerd
    assert server.proc is not None and os.path.basename(os.readlink(f"/proc/{server.proc.pid}/exe")) == "containerd"
    # A copy of the checkout as a user has it: pip builds in the source tree (build/), which
    # must neither litter this one nor carry files over from an earlier build.
    source = tmp_path / "wasm-oci"
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", ".cache", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"),
    )
    env = {
        **os.environ,
        "PATH": f"{tools_bin_dir()}:{os.environ['PATH']}",
        "WASM_OCI_SRC": str(source),
        "WASM_OCI_PREFIX": str(tmp_path / "opt"),
        "SHIM_BIN_DIR": str(server.shim_bin_dir),
        "WASM_OCI_ETC": str(etc),
        "CONTAINERD_ADDRESS": str(server.address),
        "CONTAINERD_NAMESPACE": server.namespace,
        "CONTAINERD_PID": str(server.proc.pid),
        "REGISTRY": registry.host,
        "WASM_OCI_HOME": str(tmp_path / "cli"),
        "DOCKER_CONFIG": str(tmp_path / "docker"),
    }
    result = subprocess.run(
        ["nsenter", "--mount", f"--target={server.proc.pid}", "--", "bash", str(EXAMPLES / "walkthrough.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "Hello from wasm-oci!\narg: /hello.wasm\narg: from-ctr\nGREETING=hi\n" in result.stdout
    assert "Runtime: io.containerd.wasm-oci.v1" in result.stdout
    # What containerd runs is the sh launcher; it hands anything unusual to the Python one beside it.
    assert (server.shim_bin_dir / "containerd-shim-wasm-oci-v1").read_text().startswith("#!/bin/sh")
    launcher = (server.shim_bin_dir / "containerd-shim-wasm-oci-v1.py").read_text()
    assert launcher.startswith(f"#!{tmp_path / 'opt'}/bin/python") and "site-packages" in launcher  # the regular install
    assert {p.name for p in etc.iterdir()} == {"shim.toml", "policy.json"}
    # The installed shim.toml names the installed policy, which every Create above loaded.
    assert config.parse((etc / "shim.toml").read_text(), "shim.toml").policy == str(etc / "policy.json")


def test_the_sample_configuration_parses_and_lets_the_unsigned_example_run() -> None:
    shim = config.parse((EXAMPLES / "shim.toml").read_text(), "shim.toml")
    assert (shim.group, shim.protocol, shim.policy) == ("auto", "ttrpc", "/etc/wasm-oci/policy.json")
    sample = policy.load(EXAMPLES / "policy.json")
    assert sample.rule_for(reference.parse("127.0.0.1:5000/acme/hello:1.0")).mode == "off"
    assert example_runtime()["options"] == {"ConfigPath": "/etc/wasm-oci/shim.toml"}


@pytest.fixture(scope="module")
def node(registry: RegistryServer) -> Iterator[CriNode]:
    yield from cri_node(registry)


def test_the_runtime_class_names_the_configured_runtime_and_its_pod_runs(node: CriNode) -> None:
    assert example_runtime()["runtime_type"] == "io.containerd.wasm-oci.v1"
    status = node.call(node.runtime.Status, cri.StatusRequest(verbose=False))
    assert "wasm-oci" in [h.name for h in status.runtime_handlers]
    manifests = (EXAMPLES / "runtimeclass.yaml").read_text()
    assert re.search(r"^handler: wasm-oci$", manifests, re.M)
    assert re.search(r"^\s+runtimeClassName: wasm-oci$", manifests, re.M)
    args = re.search(r"args: \[(.*)\]", manifests)
    env = re.search(r"- name: (\w+)\n\s+value: (\w+)", manifests)
    memory = re.search(r"memory: (\d+)Mi", manifests)
    assert args and env and memory
    # The pod of runtimeclass.yaml, as a kubelet would ask CRI for it.
    image = ShimHarness(node.containerd, node.registry, node.home).push(
        "hello", REPO_ROOT / "examples" / "hello" / "hello.wasm", pull=False
    )
    node.pull(image)
    config = node.pod_config("hello-wasm")
    pod_id = node.run_pod(config, "wasm-oci")
    container = node.create(
        pod_id,
        config,
        "hello",
        image,
        args=[a.strip(' "') for a in args.group(1).split(",")],
        env={env.group(1): env.group(2)},
        memory=int(memory.group(1)) << 20,
    )
    node.start(container)
    status = node.wait_state(container, cri.ContainerState.CONTAINER_EXITED)
    node.stop_pod(pod_id)
    node.remove_pod(pod_id)
    assert (status.exit_code, status.reason) == (0, "Completed")
    assert "arg: from\narg: kubernetes\nGREETING=hi" in "\n".join(
        line.split(" ", 3)[3] for line in Path(status.log_path).read_text().splitlines()
    )


# -- examples/http-function: an HTTP function with ctr -------------------------------------------


@pytest.fixture
def shim(registry: RegistryServer) -> Iterator[ShimHarness]:
    """A private containerd with the shim installed as examples/containerd says (the launcher on
    its PATH): what the HTTP function walkthrough starts from."""
    yield from shim_harness(registry)


def test_the_http_function_walkthrough_runs_as_written(shim: ShimHarness, registry: RegistryServer, tmp_path: Path) -> None:
    """examples/http-function/walkthrough.sh: push with --trigger http, `ctr images pull`,
    `ctr run -d --net-host`, curl, the access log, SIGTERM to exit 0, delete; in containerd's
    mount namespace, as on a host."""
    server = shim.containerd
    assert server.proc is not None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "PATH": f"{tools_bin_dir()}:{os.environ['PATH']}",
        "WASM_OCI": str(Path(sys.executable).with_name("wasm-oci")),
        "CONTAINERD_ADDRESS": str(server.address),
        "CONTAINERD_NAMESPACE": server.namespace,
        "REGISTRY": registry.host,
        "HTTP_ADDRESS": f"127.0.0.1:{port}",
        "LOG_DIR": str(tmp_path),
        "WASM_OCI_HOME": str(tmp_path / "cli"),
        "DOCKER_CONFIG": str(tmp_path / "docker"),
    }
    result = subprocess.run(
        ["nsenter", "--mount", f"--target={server.proc.pid}", "--", "bash", str(HTTP_FUNCTION / "walkthrough.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "Trigger:      http" in result.stdout
    assert "\nHELLO FROM CURL\n" in result.stdout
    log = (tmp_path / "upper-walkthrough.log").read_text().splitlines()
    assert len(log) == 2 and '"POST /greet?lang=en HTTP/1.1" 200 15 ' in log[0] and '"GET / HTTP/1.1" 200 0 ' in log[1], log
    assert re.search(r"^cpu\.usage_usec +\d+", result.stdout, re.M)  # ctr task metrics
    assert "exited with status 0" in result.stdout
    # Nothing left behind: no task, no container, nothing listening.
    assert "upper-walkthrough" not in server.ctr("container", "ls", "--quiet").stdout.split()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
