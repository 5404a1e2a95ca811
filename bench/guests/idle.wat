;; idle.wat -- wasi:cli/run that never returns and uses next to no CPU (the engine wakes a
;; component's wait every 2 s at most, engine/polls.py): it blocks in a one-hour
;; monotonic-clock wait, again and again. The long-running idle task of the density benchmark.
;; Built by bench/guests.py (world `idle` in wit/).
(module
  (import "wasi:clocks/monotonic-clock@0.2.0" "subscribe-duration"
    (func $subscribe_duration (param i64) (result i32)))
  (import "wasi:io/poll@0.2.0" "[method]pollable.block" (func $block (param i32)))
  (import "wasi:io/poll@0.2.0" "[resource-drop]pollable" (func $drop (param i32)))
  (memory (export "memory") 1)

  (func (export "wasi:cli/run@0.2.0#run") (result i32)
    (local $pollable i32)
    (loop $forever
      (local.set $pollable (call $subscribe_duration (i64.const 3600000000000)))
      (call $block (local.get $pollable))
      (call $drop (local.get $pollable))
      (br $forever))
    (i32.const 0))
)
