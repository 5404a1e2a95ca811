"""Task metrics in the shape containerd's clients decode: a cgroups v2 `Metrics` message
(`io.containerd.cgroups.v2.Metrics`, what `ctr task metrics` and CRI accept), encoded with
wire.py rather than a vendored cgroups .proto for a few fields.

What is known of an in-process guest: whether it runs (pids.current), the CPU time of the
thread it runs on (cpu.usage_usec: the kernel's per-thread clock, what its cgroup counts too),
and what its linear memories hold in RAM now (memory.usage and anon: the pages it touched) and
the most they ever committed (max_usage; engine/memory.py allocates them) against its limit
(usage_limit). CRI's working set is usage less inactive
file pages, of which a guest has none.
"""

from __future__ import annotations

from google.protobuf.any_pb2 import Any

from wasm_oci.engine.serve import Counters
from wasm_oci.shim import wire

TYPE_URL = "io.containerd.cgroups.v2.Metrics"
# Field numbers of github.com/containerd/cgroups cgroup2/stats/metrics.proto.
_PIDS, _CPU, _MEMORY = 1, 2, 4
_PIDS_CURRENT, _PIDS_LIMIT = 1, 2
_CPU_USAGE_USEC = 1
_MEMORY_ANON, _MEMORY_USAGE, _MEMORY_USAGE_LIMIT, _MEMORY_MAX_USAGE = 1, 32, 33, 36
_NETWORK = 9
_NET_NAME, _RX_BYTES, _RX_PACKETS, _TX_BYTES, _TX_PACKETS, _TX_ERRORS = 1, 2, 3, 6, 7, 8
HTTP_INTERFACE = "http"


def metrics(
    running: bool, cpu_ns: int, memory_used: int, memory_peak: int, memory_limit: int | None, served: Counters | None = None
) -> Any:
    """`served`: an HTTP function's requests, as a network interface named "http": requests
    received as rx_packets (their bodies as rx_bytes), responses as tx_packets (bodies as
    tx_bytes), 5xx responses as tx_errors."""
    pids = wire.field_varint(_PIDS_CURRENT, int(running)) + wire.field_varint(_PIDS_LIMIT, 1)
    cpu = wire.field_varint(_CPU_USAGE_USEC, cpu_ns // 1000)
    memory = (
        wire.field_varint(_MEMORY_ANON, memory_used)
        + wire.field_varint(_MEMORY_USAGE, memory_used)
        + wire.field_varint(_MEMORY_USAGE_LIMIT, memory_limit or 0)
        + wire.field_varint(_MEMORY_MAX_USAGE, memory_peak)
    )
    value = wire.field_bytes(_PIDS, pids) + wire.field_bytes(_CPU, cpu) + wire.field_bytes(_MEMORY, memory)
    if served is not None:
        value += wire.field_bytes(_NETWORK, _network(served))
    return Any(type_url=TYPE_URL, value=value)


def _network(served: Counters) -> bytes:
    return (
        wire.field_bytes(_NET_NAME, HTTP_INTERFACE.encode())
        + wire.field_varint(_RX_BYTES, served.bytes_in)
        + wire.field_varint(_RX_PACKETS, served.requests)
        + wire.field_varint(_TX_BYTES, served.bytes_out)
        + wire.field_varint(_TX_PACKETS, served.requests)
        + wire.field_varint(_TX_ERRORS, served.failed)
    )
