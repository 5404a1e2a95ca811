"""Task metrics in the shape containerd's clients decode: a cgroups v2 `Metrics` message
(`io.containerd.cgroups.v2.Metrics`, what `ctr task metrics` and CRI accept), encoded with
wire.py rather than a vendored cgroups .proto for three fields.

What is known of an in-process guest: whether it runs (pids.current) and its memory cap
(memory.usage_limit). Its memory use and CPU time are not exposed by the engine yet.
"""

from __future__ import annotations

from google.protobuf.any_pb2 import Any

from wasm_oci.shim import wire

TYPE_URL = "io.containerd.cgroups.v2.Metrics"
# Field numbers of github.com/containerd/cgroups cgroup2/stats/metrics.proto.
_PIDS, _MEMORY = 1, 4
_PIDS_CURRENT, _PIDS_LIMIT = 1, 2
_MEMORY_USAGE_LIMIT = 33


def metrics(running: bool, memory_limit: int | None) -> Any:
    pids = wire.field_varint(_PIDS_CURRENT, int(running)) + wire.field_varint(_PIDS_LIMIT, 1)
    memory = wire.field_varint(_MEMORY_USAGE_LIMIT, memory_limit or 0)
    value = wire.field_bytes(_PIDS, pids) + wire.field_bytes(_MEMORY, memory)
    return Any(type_url=TYPE_URL, value=value)
