"""Our .proto definitions against the published ones (containerd's, CRI's), compared as descriptors.

The upstream files (Debian's containerd API, ttrpc and k8s CRI API packages, unpacked by
tests/tools/install-system-deps.sh) are compiled with protoc into a descriptor set; ours are the
descriptors of the generated modules the shim actually loads (test_proto.py ties those to our
.proto files). For every message, enum and service we define: full name (so package), field
numbers, names, labels (repeated), types (maps are compared as their entry messages), enum
values and RPC signatures must match; any drift fails with one line per difference.

containerd's protos are compared exactly (a field we lack is drift: the shim serves them). CRI's
runtime.v1 is compared as a subset: proto/cri.proto is a client's cut of a large API, so upstream
may have more messages, fields, enum values and RPCs, but everything we define must be upstream's
exactly (a wrong number or type there would silently misparse, which is what this test is for).

Two deliberate differences are normalized away: containerd.task.v2.Task reuses the v3 messages
(containerd's v2 messages must then equal its v3 ones), and ttrpc's request.proto names its
status `.Status`, a stub of google.rpc.Status (the type ttrpc's Go code really uses).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.resources import files as resource_files

import pytest
from google.protobuf import descriptor_pb2

from services.tools import INSTALL_SCRIPT, tools_bin_dir
from wasm_oci.proto import generate

GOCODE = tools_bin_dir().parent / "root" / "usr" / "share" / "gocode" / "src"
API = "github.com/containerd/containerd/api"
THEIR_FILES = [
    f"{API}/runtime/task/v3/shim.proto",
    f"{API}/runtime/task/v2/shim.proto",
    f"{API}/types/task/task.proto",
    f"{API}/types/mount.proto",
    f"{API}/types/descriptor.proto",
    f"{API}/types/event.proto",
    f"{API}/types/metrics.proto",
    f"{API}/events/task.proto",
    f"{API}/services/events/v1/events.proto",
    f"{API}/services/ttrpc/events/v1/events.proto",
    f"{API}/services/containers/v1/containers.proto",
    f"{API}/services/images/v1/images.proto",
    f"{API}/services/content/v1/content.proto",
    f"{API}/services/tasks/v1/tasks.proto",
    f"{API}/services/snapshots/v1/snapshots.proto",
    "github.com/containerd/ttrpc/request.proto",
    # Self-contained: no imports (gogoproto included), so it compiles as it ships.
    "k8s.io/cri-api/pkg/apis/runtime/v1/api.proto",
]
# Services the shim serves must define every RPC; for the ones it calls, a subset is enough.
COMPLETE_SERVICES = {".containerd.task.v3.Task", ".containerd.task.v2.Task"}
# googleapis' google.rpc.Status, which ttrpc's `.Status` stub only sketches (code = 1).
GOOGLE_RPC_STATUS = {
    1: ("code", "TYPE_INT32", ""),
    2: ("message", "TYPE_STRING", ""),
    3: ("details", "TYPE_MESSAGE", ".google.protobuf.Any"),
}

FDP = descriptor_pb2.FieldDescriptorProto


@dataclass(frozen=True)
class Upstream:
    """Whose protos a package of ours mirrors (named in diffs), and whether ours may be a subset."""

    owner: str
    subset: bool = False


CONTAINERD = Upstream("containerd's")
UPSTREAMS = {"runtime.v1": Upstream("CRI's", subset=True)}


def upstream_of(package: str) -> Upstream:
    return UPSTREAMS.get(package, CONTAINERD)


def normalize(type_name: str) -> str:
    """containerd's type names as ours spell them."""
    if type_name == ".Status":
        return ".google.rpc.Status"
    return type_name.replace(".containerd.task.v2.", ".containerd.task.v3.")


@dataclass
class Index:
    """Messages, enums and services by full name (ours: one each; containerd's: normalized
    names, so v2 and v3 task messages land on the same key)."""

    syntax: dict[str, str] = field(default_factory=dict)
    messages: dict[str, list[descriptor_pb2.DescriptorProto]] = field(default_factory=dict)
    enums: dict[str, list[descriptor_pb2.EnumDescriptorProto]] = field(default_factory=dict)
    services: dict[str, descriptor_pb2.ServiceDescriptorProto] = field(default_factory=dict)

    def add_file(self, f: descriptor_pb2.FileDescriptorProto) -> None:
        prefix = f".{f.package}" if f.package else ""
        for enum in f.enum_type:
            self.enums.setdefault(normalize(f"{prefix}.{enum.name}"), []).append(enum)
        for message in f.message_type:
            name = normalize(f"{prefix}.{message.name}")
            self.messages.setdefault(name, []).append(message)
            self.syntax[name] = f.syntax or "proto2"
        for service in f.service:
            self.services[f"{prefix}.{service.name}"] = service


def their_index() -> Index:
    missing = [name for name in THEIR_FILES if not (GOCODE / name).is_file()]
    if missing:
        pytest.fail(f"containerd/ttrpc/CRI .proto files missing ({missing[0]}...): run `bash {INSTALL_SCRIPT}`", pytrace=False)
    well_known = resource_files("grpc_tools") / "_proto"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{GOCODE}",
            f"-I{GOCODE}/github.com/containerd/ttrpc",
            f"-I{well_known}",
            "--include_imports",
            "--descriptor_set_out=/dev/stdout",
            *THEIR_FILES,
        ],
        capture_output=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()
    index = Index()
    for f in descriptor_pb2.FileDescriptorSet.FromString(out.stdout).file:
        index.add_file(f)
    return index


def our_files() -> list[descriptor_pb2.FileDescriptorProto]:
    result = []
    for source in generate.proto_files():
        module = importlib.import_module(f"wasm_oci.proto.{source.stem}_pb2")
        f = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(f)
        result.append(f)
    return result


def _field_shape(f: descriptor_pb2.FieldDescriptorProto, names: bool) -> tuple[object, ...]:
    type_name = normalize(f.type_name) if names else f.type_name
    return (f.name, FDP.Label.Name(f.label), FDP.Type.Name(f.type), type_name, f.proto3_optional)


def compare_message(
    name: str, ours: descriptor_pb2.DescriptorProto, theirs: descriptor_pb2.DescriptorProto, upstream: Upstream = CONTAINERD
) -> list[str]:
    """In subset mode only what we define is looked at: fields, nested types and enums that are
    upstream's alone are fine, ours must exist there unchanged."""
    diffs = []
    who = upstream.owner
    mine = {f.number: _field_shape(f, names=False) for f in ours.field}
    other = {f.number: _field_shape(f, names=True) for f in theirs.field}
    for number in sorted(mine.keys() if upstream.subset else mine.keys() | other.keys()):
        if mine.get(number) != other.get(number):
            diffs.append(f"{name} field {number}: ours {mine.get(number)} != {who} {other.get(number)}")
    if ours.options.map_entry != theirs.options.map_entry:
        diffs.append(f"{name}: map entry ours {ours.options.map_entry} != {who} {theirs.options.map_entry}")
    nested_mine = {m.name: m for m in ours.nested_type}
    nested_other = {m.name: m for m in theirs.nested_type}
    for nested in sorted(nested_mine.keys() if upstream.subset else nested_mine.keys() | nested_other.keys()):
        if nested not in nested_mine or nested not in nested_other:
            where = "ours" if nested in nested_mine else who.removesuffix("'s")
            diffs.append(f"{name}.{nested}: only in {where}")
        else:
            diffs += compare_message(f"{name}.{nested}", nested_mine[nested], nested_other[nested], upstream)
    diffs += compare_enums(name, ours.enum_type, theirs.enum_type, upstream)
    return diffs


def compare_enums(
    scope: str,
    ours: Iterable[descriptor_pb2.EnumDescriptorProto],
    theirs: Iterable[descriptor_pb2.EnumDescriptorProto],
    upstream: Upstream = CONTAINERD,
) -> list[str]:
    mine = {e.name: {v.number: v.name for v in e.value} for e in ours}
    other = {e.name: {v.number: v.name for v in e.value} for e in theirs}
    diffs = []
    for name in sorted(mine.keys() if upstream.subset else mine.keys() | other.keys()):
        values, their_values = mine.get(name), other.get(name)
        if upstream.subset and values is not None and their_values is not None:
            their_values = {n: v for n, v in their_values.items() if n in values}  # upstream may add
        if values != their_values:
            diffs.append(f"{scope}.{name}: values ours {values} != {upstream.owner} {their_values}")
    return diffs


def compare_service(
    name: str,
    ours: descriptor_pb2.ServiceDescriptorProto,
    theirs: descriptor_pb2.ServiceDescriptorProto | None,
    upstream: Upstream = CONTAINERD,
) -> list[str]:
    who = upstream.owner
    if theirs is None:
        return [f"service {name}: not in {who} protos"]
    other = {m.name: m for m in theirs.method}
    diffs = []
    for method in ours.method:
        their_method = other.get(method.name)
        signature = (method.input_type, method.output_type, method.client_streaming, method.server_streaming)
        their_signature = (
            None
            if their_method is None
            else (
                normalize(their_method.input_type),
                normalize(their_method.output_type),
                their_method.client_streaming,
                their_method.server_streaming,
            )
        )
        if signature != their_signature:
            diffs.append(f"{name}/{method.name}: ours {signature} != {who} {their_signature}")
    if name in COMPLETE_SERVICES and not upstream.subset:
        missing = sorted(other.keys() - {m.name for m in ours.method})
        if missing:
            diffs.append(f"service {name}: RPCs missing from ours: {missing}")
    return diffs


def drift(ours: list[descriptor_pb2.FileDescriptorProto], theirs: Index) -> list[str]:
    diffs = []
    for f in ours:
        prefix = f".{f.package}"
        upstream = upstream_of(f.package)
        who = upstream.owner
        for message in f.message_type:
            name = f"{prefix}.{message.name}"
            if name == ".google.rpc.Status":
                shape = {fd.number: (fd.name, FDP.Type.Name(fd.type), fd.type_name) for fd in message.field}
                if shape != GOOGLE_RPC_STATUS:
                    diffs.append(f"{name}: {shape} != googleapis' {GOOGLE_RPC_STATUS}")
            if name not in theirs.messages:
                diffs.append(f"{name}: not in {who} protos")
                continue
            if f.syntax != theirs.syntax[name]:
                diffs.append(f"{name}: syntax ours {f.syntax} != {who} {theirs.syntax[name]}")
            for their_message in theirs.messages[name]:
                mine = message
                if name == ".google.rpc.Status":  # ttrpc's stub: only its fields must match
                    mine = descriptor_pb2.DescriptorProto()
                    mine.CopyFrom(message)
                    del mine.field[len(their_message.field) :]
                diffs += compare_message(name, mine, their_message, upstream)
        for enum in f.enum_type:
            name = f"{prefix}.{enum.name}"
            for their_enum in theirs.enums.get(name, [None]):
                if their_enum is None:
                    diffs.append(f"{name}: not in {who} protos")
                else:
                    diffs += compare_enums(prefix, [enum], [their_enum], upstream)
        for service in f.service:
            name = f"{prefix}.{service.name}"
            diffs += compare_service(name, service, theirs.services.get(name), upstream)
    return diffs


@pytest.fixture(scope="module")
def theirs() -> Index:
    return their_index()


def test_our_protos_match_upstreams(theirs: Index) -> None:
    ours = our_files()
    assert any(f.package == "runtime.v1" for f in ours), "proto/cri.proto not generated"
    diffs = drift(ours, theirs)
    assert not diffs, "our protos drifted from upstream's:\n  " + "\n  ".join(diffs)


def test_containerd_v2_task_messages_equal_v3(theirs: Index) -> None:
    """What lets task_v2.proto reuse the v3 messages."""
    diffs = []
    for name, versions in theirs.messages.items():
        if name.startswith(".containerd.task.v3.") and len(versions) == 2:
            diffs += compare_message(name, versions[0], versions[1])
    assert not diffs, "\n".join(diffs)
    assert len([n for n, v in theirs.messages.items() if len(v) == 2]) >= 17


def test_drift_is_reported_field_by_field(theirs: Index) -> None:
    ours = our_files()
    task = next(f for f in ours if f.package == "containerd.task.v3")
    state = next(m for m in task.message_type if m.name == "StateResponse")
    state.field[3].number = 12  # status moved
    state.field[0].type = FDP.TYPE_BYTES  # id retyped
    kill = next(m for m in task.message_type if m.name == "KillRequest")
    kill.field[1].label = FDP.LABEL_REPEATED
    del next(s for s in task.service if s.name == "Task").method[0]  # State dropped
    events = next(f for f in ours if f.package == "containerd.events")
    next(m for m in events.message_type if m.name == "TaskExit").name = "TaskExited"
    diffs = "\n".join(drift(ours, theirs))
    assert "StateResponse field 1: ours ('id', 'LABEL_OPTIONAL', 'TYPE_BYTES'" in diffs
    assert "StateResponse field 4: ours None != containerd's ('status'" in diffs
    assert "StateResponse field 12: ours ('status'" in diffs
    assert "KillRequest field 2: ours ('exec_id', 'LABEL_REPEATED'" in diffs
    assert "service .containerd.task.v3.Task: RPCs missing from ours: ['State']" in diffs
    assert ".containerd.events.TaskExited: not in containerd's protos" in diffs


def test_map_fields_are_compared_as_entries(theirs: Index) -> None:
    ours = our_files()
    images = next(f for f in ours if f.package == "containerd.services.images.v1")
    image = next(m for m in images.message_type if m.name == "Image")
    next(n for n in image.nested_type if n.name == "LabelsEntry").field[1].type = FDP.TYPE_BYTES
    assert any("Image.LabelsEntry field 2" in d for d in drift(ours, theirs))


def test_cri_is_compared_as_a_subset(theirs: Index) -> None:
    """What cri.proto leaves out (upstream's extra fields, values, RPCs) is fine; what it has must
    be upstream's exactly, and anything of its own is drift."""
    ours = our_files()
    cri = next(f for f in ours if f.package == "runtime.v1")
    config = next(m for m in cri.message_type if m.name == "ContainerConfig")
    assert 8 not in {fd.number for fd in config.field}  # devices: upstream only, not reported
    next(fd for fd in config.field if fd.name == "working_dir").number = 25  # renumbered
    config.field.add(name="wasm_module", number=99, label=FDP.LABEL_OPTIONAL, type=FDP.TYPE_STRING)
    next(fd for fd in config.field if fd.name == "envs").label = FDP.LABEL_OPTIONAL
    key_value = next(m for m in cri.message_type if m.name == "KeyValue")
    key_value.field[1].type = FDP.TYPE_STRING  # upstream's value is bytes
    state = next(e for e in cri.enum_type if e.name == "ContainerState")
    state.value.add(name="CONTAINER_PAUSED", number=9)
    next(s for s in cri.service if s.name == "RuntimeService").method.add(
        name="Pause", input_type=".runtime.v1.StopContainerRequest", output_type=".runtime.v1.StopContainerResponse"
    )
    next(m for m in cri.message_type if m.name == "Image").name = "ImageInfo"
    diffs = drift(ours, theirs)
    text = "\n".join(diffs)
    # Subset mode: the emptied field 5 is just one we leave out; the new number is the drift.
    assert ".runtime.v1.ContainerConfig field 25: ours ('working_dir', 'LABEL_OPTIONAL'" in text
    assert "'TYPE_STRING', '', False) != CRI's None" in text
    assert "field 5:" not in text
    assert ".runtime.v1.ContainerConfig field 99: ours ('wasm_module', 'LABEL_OPTIONAL', 'TYPE_STRING'" in text
    assert ".runtime.v1.ContainerConfig field 6: ours ('envs', 'LABEL_OPTIONAL'" in text
    assert ".runtime.v1.KeyValue field 2: ours ('value', 'LABEL_OPTIONAL', 'TYPE_STRING'" in text
    assert ".runtime.v1.ContainerState: values ours" in text and "CONTAINER_PAUSED" in text
    assert ".runtime.v1.RuntimeService/Pause: ours" in text and "!= CRI's None" in text
    assert ".runtime.v1.ImageInfo: not in CRI's protos" in text
    assert len(diffs) == 7, text
