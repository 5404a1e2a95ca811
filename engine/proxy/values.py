"""Host functions for a component, with values converted by plans built once per function.

wasmtime-py's `LinkerInstance.add_func` is correct but too slow for HTTP bodies: it converts
a list<u8> one Python object per byte (~1 us each: a 64 KiB chunk ~70 ms) and reads the
function's type again on every call. Here the plan for each parameter and the result is made
once, from the type the component imports, and a list<u8> is copied as one block (a strided
slice of Wasmtime's value array). Values in Python:

  bool, integers, floats, char (str), string     as Python's own
  list<u8>                                       bytes (bytes, bytearray or memoryview going in)
  list<T>, tuple<...>                            list, tuple
  record                                         dict of field name -> value
  enum                                           str (the case name)
  flags                                          set of str
  variant, result                                Variant(tag, payload) (payload None for no payload)
  option<T>                                      None or the value (no WASI interface here nests options)
  own<R>, borrow<R> of a host resource           the resource's rep (int); R's host type is the plan's

Like ffi.py and memory.py, this module reaches into `wasmtime._ffi` (the C API's bindings,
pinned by `wasmtime>=50,<51`): it registers its own C callback for each function, so that
the values never go through wasmtime-py's per-value conversion.
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Callable
from typing import Any

import wasmtime
import wasmtime.component as wc
from wasmtime import _ffi as capi

Lift = Callable[[wasmtime.StoreContext, Any], Any]
"""Wasmtime's value (a wasmtime_component_val_t, whose contents it takes) -> Python's."""
Lower = Callable[[wasmtime.StoreContext, Any, Any], None]
"""Python's value -> a wasmtime_component_val_t (at a pointer), which Wasmtime then owns."""
HostCall = Callable[..., Any]
ResourceIds = Callable[[wc.ResourceType], int]
"""The host type id (ResourceType.host) the linker gave an imported resource type."""

_VAL = capi.wasmtime_component_val_t
_VAL_SIZE = ctypes.sizeof(_VAL)
_PAYLOAD = _VAL.of.offset  # where a u8's byte sits in each value of the array
_U8 = capi.WASMTIME_COMPONENT_U8.value
_VOID = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class HostError(Exception):
    """Raised by a host function to trap the guest with this message."""


def _take_payload(pointer: Any, lift: Lift, store: wasmtime.StoreContext) -> Any:
    """Lift a boxed payload (a variant's, option's or result's) and leave an empty value in
    its box, which Wasmtime frees with the arguments it passed."""
    value = lift(store, pointer.contents)
    pointer.contents.kind = capi.WASMTIME_COMPONENT_BOOL
    return value


def _boxed(store: wasmtime.StoreContext, lower: Lower, value: Any) -> Any:
    raw = _VAL()
    lower(store, value, ctypes.pointer(raw))
    return capi.wasmtime_component_val_new(ctypes.byref(raw))


def _name(text: str) -> Any:
    return capi.str_to_capi(text)


def _text(vec: Any) -> str:
    text = capi.to_str(vec)
    capi.wasm_byte_vec_delete(ctypes.byref(vec))
    return text


_SCALARS: dict[type, tuple[str, Any]] = {
    wc.Bool: ("boolean", capi.WASMTIME_COMPONENT_BOOL),
    wc.S8: ("s8", capi.WASMTIME_COMPONENT_S8),
    wc.U8: ("u8", capi.WASMTIME_COMPONENT_U8),
    wc.S16: ("s16", capi.WASMTIME_COMPONENT_S16),
    wc.U16: ("u16", capi.WASMTIME_COMPONENT_U16),
    wc.S32: ("s32", capi.WASMTIME_COMPONENT_S32),
    wc.U32: ("u32", capi.WASMTIME_COMPONENT_U32),
    wc.S64: ("s64", capi.WASMTIME_COMPONENT_S64),
    wc.U64: ("u64", capi.WASMTIME_COMPONENT_U64),
    wc.F32: ("f32", capi.WASMTIME_COMPONENT_F32),
    wc.F64: ("f64", capi.WASMTIME_COMPONENT_F64),
}


def lift_plan(ty: wc.ValType) -> Lift:
    """How to read a value of `ty` from Wasmtime (see the module docstring for the shapes)."""
    if type(ty) in _SCALARS:
        field = _SCALARS[type(ty)][0]
        if isinstance(ty, wc.Bool):
            return lambda _store, c: bool(c.of.boolean)
        return lambda _store, c: getattr(c.of, field)
    if isinstance(ty, wc.Char):
        return lambda _store, c: chr(c.of.character)
    if isinstance(ty, wc.String):
        return lambda _store, c: _text(c.of.string)
    if isinstance(ty, wc.ListType):
        element = ty.element
        if isinstance(element, wc.U8):
            return _lift_bytes
        item = lift_plan(element)

        def lift_list(store: wasmtime.StoreContext, c: Any) -> list[Any]:
            values = c.of.list
            try:
                out = []
                for index in range(values.size):
                    entry = values.data[index]
                    out.append(item(store, entry))
                    entry.kind = capi.WASMTIME_COMPONENT_BOOL
                return out
            finally:
                capi.wasmtime_component_vallist_delete(ctypes.byref(values))

        return lift_list
    if isinstance(ty, wc.TupleType):
        items = [lift_plan(element) for element in ty.elements]

        def lift_tuple(store: wasmtime.StoreContext, c: Any) -> tuple[Any, ...]:
            values = c.of.tuple
            try:
                out = []
                for index, item in enumerate(items):
                    entry = values.data[index]
                    out.append(item(store, entry))
                    entry.kind = capi.WASMTIME_COMPONENT_BOOL
                return tuple(out)
            finally:
                capi.wasmtime_component_valtuple_delete(ctypes.byref(values))

        return lift_tuple
    if isinstance(ty, wc.RecordType):
        fields = [(name, lift_plan(field)) for name, field in ty.fields]

        def lift_record(store: wasmtime.StoreContext, c: Any) -> dict[str, Any]:
            values = c.of.record
            try:
                out = {}
                for index, (name, item) in enumerate(fields):
                    entry = values.data[index]
                    out[name] = item(store, entry.val)
                    entry.val.kind = capi.WASMTIME_COMPONENT_BOOL
                return out
            finally:
                capi.wasmtime_component_valrecord_delete(ctypes.byref(values))

        return lift_record
    if isinstance(ty, wc.EnumType):
        return lambda _store, c: _text(c.of.enumeration)
    if isinstance(ty, wc.FlagsType):
        return lambda _store, c: ty.convert_from_c(c)
    if isinstance(ty, wc.VariantType | wc.ResultType):
        cases = {name: None if case is None else lift_plan(case) for name, case in _cases(ty)}
        is_result = isinstance(ty, wc.ResultType)

        def lift_variant(store: wasmtime.StoreContext, c: Any) -> wc.Variant:
            if is_result:
                tag, payload = ("ok" if c.of.result.is_ok else "err"), c.of.result.val
            else:
                tag, payload = _text(c.of.variant.discriminant), c.of.variant.val
            item = cases[tag]
            return wc.Variant(tag, _take_payload(payload, item, store) if item is not None and payload else None)

        return lift_variant
    if isinstance(ty, wc.OptionType):
        some = lift_plan(ty.payload)
        return lambda store, c: _take_payload(c.of.option, some, store) if c.of.option else None
    if isinstance(ty, wc.OwnType | wc.BorrowType):
        return _lift_resource
    raise TypeError(f"no conversion for component values of type {type(ty).__name__}")


def _lift_resource(store: wasmtime.StoreContext, c: Any) -> int:
    """The rep of a host resource (the C calls direct: wasmtime-py's wrappers cost ~20 us a value)."""
    resource = capi.take_pointer(c.of, "resource")
    host = ctypes.POINTER(capi.wasmtime_component_resource_host_t)()
    try:
        error = capi.wasmtime_component_resource_any_to_host(store._context(), resource, ctypes.byref(host))
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        return int(capi.wasmtime_component_resource_host_rep(host))
    finally:
        if host:
            capi.wasmtime_component_resource_host_delete(host)
        capi.wasmtime_component_resource_any_delete(resource)


def resource_value(store: wasmtime.StoreContext | wasmtime.Store, rep: int, host_type: int, owned: bool) -> Any:
    """A wasmtime_component_resource_any_t* for host resource `rep` (the caller passes its ownership on)."""
    host = capi.wasmtime_component_resource_host_new(owned, rep, host_type)
    resource = ctypes.POINTER(capi.wasmtime_component_resource_any_t)()
    try:
        error = capi.wasmtime_component_resource_host_to_any(store._context(), host, ctypes.byref(resource))
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
    finally:
        capi.wasmtime_component_resource_host_delete(host)
    return resource


def _lift_bytes(_store: wasmtime.StoreContext, c: Any) -> bytes:
    values = c.of.list
    try:
        if not values.size:
            return b""
        array = (ctypes.c_ubyte * (values.size * _VAL_SIZE)).from_address(ctypes.addressof(values.data.contents))
        return memoryview(array).cast("B")[_PAYLOAD::_VAL_SIZE].tobytes()
    finally:
        capi.wasmtime_component_vallist_delete(ctypes.byref(values))


def _cases(ty: wc.VariantType | wc.ResultType) -> list[tuple[str, wc.ValType | None]]:
    if isinstance(ty, wc.ResultType):
        return [("ok", ty.ok), ("err", ty.err)]
    return list(ty.cases)


def lower_plan(ty: wc.ValType, resource_ids: ResourceIds) -> Lower:
    """How to hand a Python value of `ty` to Wasmtime (see the module docstring for the shapes)."""
    if type(ty) in _SCALARS:
        field, kind = _SCALARS[type(ty)]

        def lower_scalar(_store: wasmtime.StoreContext, value: Any, out: Any) -> None:
            out.contents.kind = kind
            setattr(out.contents.of, field, value)

        return lower_scalar
    if isinstance(ty, wc.Char):

        def lower_char(_store: wasmtime.StoreContext, value: Any, out: Any) -> None:
            out.contents.kind = capi.WASMTIME_COMPONENT_CHAR
            out.contents.of.character = ord(value)

        return lower_char
    if isinstance(ty, wc.String):

        def lower_string(_store: wasmtime.StoreContext, value: Any, out: Any) -> None:
            out.contents.kind = capi.WASMTIME_COMPONENT_STRING
            out.contents.of.string = _name(value)

        return lower_string
    if isinstance(ty, wc.ListType):
        element = ty.element
        if isinstance(element, wc.U8):
            return _lower_bytes
        item = lower_plan(element, resource_ids)

        def lower_list(store: wasmtime.StoreContext, value: Any, out: Any) -> None:
            values = capi.wasmtime_component_vallist_t()
            capi.wasmtime_component_vallist_new_uninit(values, len(value))
            _fill(store, values, [(item, entry) for entry in value], capi.wasmtime_component_vallist_delete)
            out.contents.kind = capi.WASMTIME_COMPONENT_LIST
            out.contents.of.list = values

        return lower_list
    if isinstance(ty, wc.TupleType):
        items = [lower_plan(element, resource_ids) for element in ty.elements]

        def lower_tuple(store: wasmtime.StoreContext, value: Any, out: Any) -> None:
            values = capi.wasmtime_component_valtuple_t()
            capi.wasmtime_component_valtuple_new_uninit(values, len(items))
            _fill(store, values, list(zip(items, value, strict=True)), capi.wasmtime_component_valtuple_delete)
            out.contents.kind = capi.WASMTIME_COMPONENT_TUPLE
            out.contents.of.tuple = values

        return lower_tuple
    if isinstance(ty, wc.RecordType):
        fields = [(name, lower_plan(field, resource_ids)) for name, field in ty.fields]

        def lower_record(store: wasmtime.StoreContext, value: Any, out: Any) -> None:
            values = capi.wasmtime_component_valrecord_t()
            capi.wasmtime_component_valrecord_new_uninit(values, len(fields))
            done = 0
            try:
                for index, (name, item) in enumerate(fields):
                    entry = values.data[index]
                    item(store, value[name], ctypes.pointer(entry.val))
                    entry.name = _name(name)
                    done += 1
            except BaseException:
                for index in range(done, len(fields)):
                    values.data[index].val.kind = capi.WASMTIME_COMPONENT_BOOL
                    values.data[index].name = _name("")
                capi.wasmtime_component_valrecord_delete(ctypes.byref(values))
                raise
            out.contents.kind = capi.WASMTIME_COMPONENT_RECORD
            out.contents.of.record = values

        return lower_record
    if isinstance(ty, wc.EnumType):

        def lower_enum(_store: wasmtime.StoreContext, value: Any, out: Any) -> None:
            out.contents.kind = capi.WASMTIME_COMPONENT_ENUM
            out.contents.of.enumeration = _name(value)

        return lower_enum
    if isinstance(ty, wc.FlagsType):
        return ty.convert_to_c
    if isinstance(ty, wc.VariantType | wc.ResultType):
        cases = {name: None if case is None else lower_plan(case, resource_ids) for name, case in _cases(ty)}
        is_result = isinstance(ty, wc.ResultType)

        def lower_variant(store: wasmtime.StoreContext, value: Any, out: Any) -> None:
            if not isinstance(value, wc.Variant) or value.tag not in cases:
                raise TypeError(f"expected a Variant with a tag of {sorted(cases)}, not {value!r}")
            item = cases[value.tag]
            payload = None if item is None else _boxed(store, item, value.payload)
            if is_result:
                out.contents.kind = capi.WASMTIME_COMPONENT_RESULT
                out.contents.of.result.is_ok = value.tag == "ok"
                out.contents.of.result.val = payload
            else:
                out.contents.kind = capi.WASMTIME_COMPONENT_VARIANT
                out.contents.of.variant.discriminant = _name(value.tag)
                out.contents.of.variant.val = payload

        return lower_variant
    if isinstance(ty, wc.OptionType):
        some = lower_plan(ty.payload, resource_ids)

        def lower_option(store: wasmtime.StoreContext, value: Any, out: Any) -> None:
            out.contents.kind = capi.WASMTIME_COMPONENT_OPTION
            out.contents.of.option = None if value is None else _boxed(store, some, value)

        return lower_option
    if isinstance(ty, wc.OwnType | wc.BorrowType):
        host_type = resource_ids(ty.ty)
        owned = isinstance(ty, wc.OwnType)

        def lower_resource(store: wasmtime.StoreContext, rep: Any, out: Any) -> None:
            out.contents.kind = capi.WASMTIME_COMPONENT_RESOURCE
            out.contents.of.resource = resource_value(store, rep, host_type, owned)

        return lower_resource
    raise TypeError(f"no conversion for component values of type {type(ty).__name__}")


def _fill(store: wasmtime.StoreContext, values: Any, items: list[tuple[Lower, Any]], delete: Callable[[Any], None]) -> None:
    done = 0
    try:
        for index, (item, entry) in enumerate(items):
            item(store, entry, ctypes.pointer(values.data[index]))
            done += 1
    except BaseException:
        for index in range(done, len(items)):
            values.data[index].kind = capi.WASMTIME_COMPONENT_BOOL
        delete(ctypes.byref(values))
        raise


def _lower_bytes(_store: wasmtime.StoreContext, value: Any, out: Any) -> None:
    data = bytes(value)
    values = capi.wasmtime_component_vallist_t()
    capi.wasmtime_component_vallist_new_uninit(values, len(data))
    if data:
        block = bytearray(len(data) * _VAL_SIZE)
        block[0::_VAL_SIZE] = bytes([_U8]) * len(data)
        block[_PAYLOAD::_VAL_SIZE] = data
        ctypes.memmove(values.data, (ctypes.c_char * len(block)).from_buffer(block), len(block))
    out.contents.kind = capi.WASMTIME_COMPONENT_LIST
    out.contents.of.list = values


class _Function:
    def __init__(self, call: HostCall, lifts: list[Lift], lower: Lower | None, on_error: Callable[[BaseException], None]) -> None:
        self.call, self.lifts, self.lower, self.on_error = call, lifts, lower, on_error


_functions: dict[int, _Function] = {}
_ids = itertools.count(1)


def _error(message: str) -> int:
    return ctypes.cast(wasmtime.WasmtimeError(message)._consume(), ctypes.c_void_p).value or 0


@capi.wasmtime_component_func_callback_t  # type: ignore[untyped-decorator]
def _trampoline(data: int | None, context: Any, _type: Any, args: Any, count: int, results: Any, _results: int) -> int:
    function = _functions.get(data or 0)
    if function is None:
        return _error("host function called after its linker was dropped")
    store = wasmtime.StoreContext(context)
    try:
        params = [lift(store, args[index]) for index, lift in enumerate(function.lifts)]
        value = function.call(*params)
        if function.lower is not None:
            function.lower(store, value, results)
        return 0
    except HostError as exc:
        return _error(str(exc))
    except Exception as exc:  # a bug of ours: keep it for the caller's diagnostics, trap the guest
        function.on_error(exc)
        return _error(f"host function failed: {type(exc).__name__}: {exc}")
    finally:
        store._invalidate()


def _forget(data: int | None) -> None:
    _functions.pop(data or 0, None)


_finalize = _VOID(_forget)


def define(
    instance: wc.LinkerInstance,
    name: str,
    ty: wc.FuncType,
    call: HostCall,
    resource_ids: ResourceIds,
    on_error: Callable[[BaseException], None] = lambda _exc: None,
) -> None:
    """Define function `name` of type `ty` (as the component imports it) in `instance`:
    `call(*params)` gets and returns values as the module docstring shows. It may raise
    HostError to trap the guest with a message; any other exception traps it too, after
    `on_error(exc)`."""
    result = ty.result
    function = _Function(
        call,
        [lift_plan(param) for _, param in ty.params],
        None if result is None else lower_plan(result, resource_ids),
        on_error,
    )
    key = next(_ids)
    _functions[key] = function
    raw = name.encode()
    error = capi.wasmtime_component_linker_instance_add_func(instance.ptr(), raw, len(raw), _trampoline, key, _finalize)
    if error:
        _functions.pop(key, None)
        raise wasmtime.WasmtimeError._from_ptr(error)


def call_with_resources(func: wc.Func, store: wasmtime.Store, resources: list[tuple[int, int]]) -> None:
    """Call `func`, whose parameters are own handles of host resources ((rep, host type) each)
    and which returns nothing, without wasmtime-py's per-call type reading."""
    args = (_VAL * len(resources))()
    done = 0
    try:
        for index, (rep, host_type) in enumerate(resources):
            args[index].kind = capi.WASMTIME_COMPONENT_RESOURCE
            args[index].of.resource = resource_value(store, rep, host_type, True)
            done += 1
        error = capi.wasmtime_component_func_call(ctypes.byref(func._func), store._context(), args, done, None, 0)
    finally:
        for index in range(done):
            capi.wasmtime_component_val_delete(ctypes.byref(args[index]))
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
