"""Pollable waits a stop can cut short, for components.

A component waits in wasi:io/poll (`[method]pollable.block`, `poll`: what its sleep, and any
wait on a stream, comes down to), which Wasmtime implements by sleeping in the host, where no
epoch check reaches. The linker cannot replace just those functions: defining one replaces
the whole wasi:io/poll instance, whose `pollable` resource Python can declare with Wasmtime's
type but not with Wasmtime's destructor, so every pollable the guest dropped would stay in
its WASI table, and dropping a stream it once subscribed to would trap ("resource has
children").

So a component importing wasi:io/poll is wrapped at load (`wrap`): an outer component with
the guest's own imports instantiates the guest inside it and hands it a wasi:io/poll of
Wasmtime's pollable and ready (its drops stay Wasmtime's), with a block and a poll in Wasm
that wait on Wasmtime's poll a slice at a time (SLICE, doubling up to LONGEST): a stop traps
the guest at the epoch check between two slices. What they call is imported from Wasmtime's WASI under an ALIAS version,
which its linker resolves to its own 0.2 (the guest may import those interfaces itself, or
only part of them). Nothing of it runs in Python. The price: ~30 us more per instantiation
(the block and poll's instance and memory), and a sleeping component wakes at the end of
each slice (~20 us of CPU each: a few in its first second, then one every 2 s). A component importing no wasi:io/poll is left as it is.
"""

from __future__ import annotations

import functools

import wasmtime

from wasm_oci.binary import uleb128
from wasm_oci.engine.component_binary import (
    COMPONENT,
    EXPORT_SECTION,
    FUNC,
    HEADER,
    INSTANCE,
    TYPE,
    leb,
    read_exports,
    read_name,
    read_sort,
    sections,
    skip_externdesc,
)

SLICE = 20_000_000
"""Nanoseconds of a wait's first slice: a stop soon after a wait began ends it within the
shim's kill grace (50 ms)."""
LONGEST = 2_000_000_000
"""Each slice doubles up to this: a long sleep costs a wake-up every 2 s (thousands of idle
guests stay near 0 CPU), and a stopped guest's thread ends within 2 s (the shim reports the
kill after its grace and lets go of the guest's stdio meanwhile)."""
ALIAS = "0.2.999"
"""The version the outer component imports Wasmtime's wasi:io/poll and monotonic clock as:
one no guest imports, semver-compatible with Wasmtime's."""
WRAPPER = f"stop-polls 2 {SLICE} {LONGEST}"
"""Names this wrapping in the compile cache's key: a component compiled before it, or by
another version of it, is compiled again."""

_IMPORTS_AND_TYPES = (0, 3, 6, 7, 10)
"""Custom, core type, alias, type and import sections: what declares a component's imports."""
_POLL = "wasi:io/poll@0.2."
_BOOL, _U32, _U64 = b"\x7f", b"\x79", b"\x77"
_BORROW, _OWN, _LIST, _FUNC_TYPE, _INSTANCE_TYPE = b"\x68", b"\x69", b"\x70", b"\x40", b"\x42"

_MIXER_WAT = """(component
  (import "pollable" (type $pollable (sub resource)))
  (import "poll" (instance $poll
    (alias outer 1 $pollable (type)) (export "pollable" (type (eq 0)))
    (export "[method]pollable.ready" (func (param "self" (borrow 1)) (result bool)))
    (export "poll" (func (param "in" (list (borrow 1))) (result (list u32))))))
  (import "clock" (instance $clock
    (alias outer 1 $pollable (type)) (export "pollable" (type (eq 0)))
    (export "subscribe-duration" (func (param "when" u64) (result (own 1))))))
  (core module $heap
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 0))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (local $at i32)
      (local.set $at (i32.and (i32.add (global.get $next) (i32.const 7)) (i32.const -8)))
      (global.set $next (i32.add (local.get $at) (local.get 3)))
      (if (i32.gt_u (global.get $next) (i32.shl (memory.size) (i32.const 16))) (then
        (if (i32.eq (memory.grow (i32.shr_u (i32.sub (i32.add (global.get $next) (i32.const 65535))
                                                      (i32.shl (memory.size) (i32.const 16))) (i32.const 16)))
                    (i32.const -1))
          (then unreachable))))
      (local.get $at))
    (func (export "mark") (result i32) (global.get $next))
    (func (export "release") (param i32) (global.set $next (local.get 0)))
    (func (export "reset") (param i32) (global.set $next (i32.const 0))))
  (core instance $heap (instantiate $heap))
  (alias core export $heap "memory" (core memory $memory))
  (alias core export $heap "realloc" (core func $realloc))
  (core func $ready (canon lower (func $poll "[method]pollable.ready")))
  (core func $poll (canon lower (func $poll "poll") (memory $memory) (realloc $realloc)))
  (core func $subscribe (canon lower (func $clock "subscribe-duration")))
  (core func $drop (canon resource.drop $pollable))
  (core module $main
    (import "" "memory" (memory 1))
    (import "" "realloc" (func $alloc (param i32 i32 i32 i32) (result i32)))
    (import "" "mark" (func $mark (result i32)))
    (import "" "release" (func $release (param i32)))
    (import "" "ready" (func $ready (param i32) (result i32)))
    (import "" "poll" (func $poll (param i32 i32 i32)))
    (import "" "subscribe" (func $subscribe (param i64) (result i32)))
    (import "" "drop" (func $drop (param i32)))
    (func $wait (param $list i32) (param $count i32) (param $result i32)
      (local $mark i32) (local $timer i32) (local $ready i32) (local $fired i32) (local $i i32) (local $kept i32) (local $index i32)
      (local $span i64)
      (local.set $mark (call $mark))
      (local.set $span (i64.const SLICE))
      (loop $slice
        (call $release (local.get $mark))
        (local.set $timer (call $subscribe (local.get $span)))
        (local.set $span (select (i64.const LONGEST) (i64.shl (local.get $span) (i64.const 1))
          (i64.gt_u (i64.shl (local.get $span) (i64.const 1)) (i64.const LONGEST))))
        (i32.store (i32.add (local.get $list) (i32.shl (local.get $count) (i32.const 2))) (local.get $timer))
        (call $poll (local.get $list) (i32.add (local.get $count) (i32.const 1)) (local.get $result))
        (call $drop (local.get $timer))
        (local.set $ready (i32.load (local.get $result)))
        (local.set $fired (i32.load offset=4 (local.get $result)))
        (local.set $i (i32.const 0))
        (local.set $kept (i32.const 0))
        (block $done (loop $each
          (br_if $done (i32.ge_u (local.get $i) (local.get $fired)))
          (local.set $index (i32.load (i32.add (local.get $ready) (i32.shl (local.get $i) (i32.const 2)))))
          (if (i32.ne (local.get $index) (local.get $count)) (then
            (i32.store (i32.add (local.get $ready) (i32.shl (local.get $kept) (i32.const 2))) (local.get $index))
            (local.set $kept (i32.add (local.get $kept) (i32.const 1)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $each)))
        (br_if $slice (i32.eqz (local.get $kept))))
      (i32.store offset=4 (local.get $result) (local.get $kept)))
    (func (export "ready") (param $pollable i32) (result i32) (local $ready i32)
      (local.set $ready (call $ready (local.get $pollable)))
      (call $drop (local.get $pollable))
      (local.get $ready))
    (func (export "block") (param $pollable i32) (local $mark i32) (local $list i32)
      (local.set $mark (call $mark))
      (local.set $list (call $alloc (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 16)))
      (i32.store (local.get $list) (local.get $pollable))
      (call $wait (local.get $list) (i32.const 1) (i32.add (local.get $list) (i32.const 8)))
      (call $drop (local.get $pollable))
      (call $release (local.get $mark)))
    (func (export "poll") (param $in i32) (param $count i32) (result i32) (local $list i32) (local $result i32) (local $i i32)
      (if (i32.eqz (local.get $count)) (then unreachable))
      (local.set $list (call $alloc (i32.const 0) (i32.const 0) (i32.const 4)
        (i32.shl (i32.add (local.get $count) (i32.const 1)) (i32.const 2))))
      (memory.copy (local.get $list) (local.get $in) (i32.shl (local.get $count) (i32.const 2)))
      (local.set $result (call $alloc (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 8)))
      (call $wait (local.get $list) (local.get $count) (local.get $result))
      (block $done (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (call $drop (i32.load (i32.add (local.get $list) (i32.shl (local.get $i) (i32.const 2)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
      (local.get $result)))
  (core instance $main (instantiate $main (with "" (instance
    (export "memory" (memory $memory)) (export "realloc" (func $realloc))
    (export "mark" (func $heap "mark")) (export "release" (func $heap "release"))
    (export "ready" (func $ready)) (export "poll" (func $poll)) (export "subscribe" (func $subscribe)) (export "drop" (func $drop))))))
  (func $ready (param "self" (borrow $pollable)) (result bool) (canon lift (core func $main "ready")))
  (func $block (param "self" (borrow $pollable)) (canon lift (core func $main "block")))
  (func $wait (param "in" (list (borrow $pollable))) (result (list u32))
    (canon lift (core func $main "poll") (memory $memory) (realloc $realloc) (post-return (core func $heap "reset"))))
  (export $exported "pollable" (type $pollable))
  (export "[method]pollable.ready" (func $ready) (func (param "self" (borrow $exported)) (result bool)))
  (export "[method]pollable.block" (func $block) (func (param "self" (borrow $exported))))
  (export "poll" (func $wait) (func (param "in" (list (borrow $exported))) (result (list u32)))))"""
"""The guest's wasi:io/poll: Wasmtime's pollable and ready; block and poll that wait on
Wasmtime's poll a slice at a time, the loop's epoch check between slices."""


@functools.cache
def _mixer() -> bytes:
    return bytes(wasmtime.wat2wasm(_MIXER_WAT.replace("SLICE", str(SLICE)).replace("LONGEST", str(LONGEST))))


def _name(text: str) -> bytes:
    raw = text.encode()
    return uleb128(len(raw)) + raw


def _section(kind: int, *entries: bytes) -> bytes:
    body = uleb128(len(entries)) + b"".join(entries)
    return bytes([kind]) + uleb128(len(body)) + body


def wrap(wasm: bytes) -> bytes | None:
    """The component wrapped so that a stop ends its waits (of its first wasi:io/poll, should
    it import several versions); None when it imports no wasi:io/poll, or declares an import
    after its code, which no toolchain does (it then stays as it is)."""
    wasm = bytes(wasm)  # wat2wasm gives a bytearray
    if not wasm.startswith(HEADER):
        return None
    try:
        found = sections(wasm)
        prefix = 0
        while prefix < len(found) and found[prefix][0] in _IMPORTS_AND_TYPES:
            prefix += 1
        if any(kind == 10 for kind, _, _ in found[prefix:]):
            return None
        counts: dict[bytes, int] = {}
        imports: list[tuple[str, bytes, int]] = []
        for kind, start, end in found[:prefix]:
            if kind in (0, 3):
                continue
            entries, at = leb(wasm, start)
            if kind == 7:
                counts[TYPE] = counts.get(TYPE, 0) + entries
                continue
            for _ in range(entries):
                if kind == 6:  # alias: sort, then an export of an instance or core instance, or an outer one
                    sort, at = read_sort(wasm, at)
                    target, at = wasm[at], at + 1
                    _, at = leb(wasm, at)
                    if target == 2:
                        _, at = leb(wasm, at)
                    else:
                        _, at = read_name(wasm, at)
                else:  # import: a plain name (0x00), then what it is
                    if wasm[at] != 0:
                        return None
                    name, at = read_name(wasm, at + 1)
                    sort, at = skip_externdesc(wasm, at)
                    imports.append((name, sort, counts.get(sort, 0)))
                counts[sort] = counts.get(sort, 0) + 1
            if at != end:
                return None
        polls = [index for name, sort, index in imports if name.startswith(_POLL) and sort == INSTANCE]
        if not polls:
            return None
        exports = [export for kind, start, _ in found[prefix:] if kind == EXPORT_SECTION for export in read_exports(wasm, start)[0]]
    except (IndexError, UnicodeDecodeError, ValueError):
        return None
    return _wrapped(wasm, prefix=found[:prefix], counts=counts, imports=imports, poll=polls[0], exports=exports)


def _instance_type(pollable: int, *declarations: bytes) -> bytes:
    """An instance type whose type 0 is the outer `pollable`, exported as its type 1."""
    alias = b"\x02" + TYPE + b"\x02\x01" + uleb128(pollable)
    exported = b"\x04\x00" + _name("pollable") + TYPE + b"\x00\x00"
    return _INSTANCE_TYPE + uleb128(2 + len(declarations)) + alias + exported + b"".join(declarations)


def _type(body: bytes) -> bytes:
    return b"\x01" + body


def _func_type(params: list[tuple[str, bytes]], result: bytes) -> bytes:
    return _type(_FUNC_TYPE + uleb128(len(params)) + b"".join(_name(name) + kind for name, kind in params) + b"\x00" + result)


def _func_export(name: str, index: int) -> bytes:
    return b"\x04\x00" + _name(name) + FUNC + uleb128(index)


def _wrapped(
    wasm: bytes,
    *,
    prefix: list[tuple[int, int, int]],
    counts: dict[bytes, int],
    imports: list[tuple[str, bytes, int]],
    poll: int,
    exports: list[tuple[str, bytes]],
) -> bytes:
    """`wasm` inside the outer component; `prefix`: its sections up to its code, `counts`: the
    items of each sort they define, `imports`: (name, sort, index), `poll`: the instance index
    of its wasi:io/poll, `exports`: (name, sort)."""

    def next_index(sort: bytes) -> int:
        counts[sort] = counts.get(sort, 0) + 1
        return counts[sort] - 1

    out = bytearray(HEADER)
    for kind, start, end in prefix:
        if kind != 0:
            out += bytes([kind]) + uleb128(end - start) + wasm[start:end]
    pollable = next_index(TYPE)  # the guest's wasi:io/poll's, as its other imports see it
    out += _section(6, TYPE + b"\x00" + uleb128(poll) + _name("pollable"))
    poll_type, clock_type = next_index(TYPE), next_index(TYPE)
    out += _section(
        7,
        _instance_type(
            pollable,  # types 2: borrow, 3: ready, 4: list of borrows, 5: list<u32>, 6: poll
            _type(_BORROW + b"\x01"),
            _func_type([("self", b"\x02")], _BOOL),
            _func_export("[method]pollable.ready", 3),
            _type(_LIST + b"\x02"),
            _type(_LIST + _U32),
            _func_type([("in", b"\x04")], b"\x05"),
            _func_export("poll", 6),
        ),
        _instance_type(
            pollable,  # types 2: own, 3: subscribe-duration
            _type(_OWN + b"\x01"),
            _func_type([("when", _U64)], b"\x02"),
            _func_export("subscribe-duration", 3),
        ),
    )
    wasi_poll, wasi_clock = next_index(INSTANCE), next_index(INSTANCE)
    out += _section(
        10,
        b"\x00" + _name(f"wasi:io/poll@{ALIAS}") + INSTANCE + uleb128(poll_type),
        b"\x00" + _name(f"wasi:clocks/monotonic-clock@{ALIAS}") + INSTANCE + uleb128(clock_type),
    )
    mixer = next_index(COMPONENT)
    out += bytes([4]) + uleb128(len(_mixer())) + _mixer()
    mixed = next_index(INSTANCE)
    out += _section(
        5,
        b"\x00"
        + uleb128(mixer)
        + uleb128(3)
        + _name("pollable")
        + TYPE
        + uleb128(pollable)
        + _name("poll")
        + INSTANCE
        + uleb128(wasi_poll)
        + _name("clock")
        + INSTANCE
        + uleb128(wasi_clock),
    )
    guest = next_index(COMPONENT)
    out += bytes([4]) + uleb128(len(wasm)) + wasm
    instance = next_index(INSTANCE)
    args = [_name(name) + sort + uleb128(mixed if sort == INSTANCE and index == poll else index) for name, sort, index in imports]
    out += _section(5, b"\x00" + uleb128(guest) + uleb128(len(args)) + b"".join(args))
    if exports:
        out += _section(6, *(sort + b"\x00" + uleb128(instance) + _name(name) for name, sort in exports))
        aliases = [next_index(sort) for _, sort in exports]
        out += _section(
            11, *(b"\x00" + _name(name) + sort + uleb128(index) + b"\x00" for (name, sort), index in zip(exports, aliases, strict=True))
        )
    return bytes(out)
