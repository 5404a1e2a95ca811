;; clock.wat -- wasi:cli/run that prints the wall-clock time in nanoseconds since the epoch
;; ("1763920000123456789\n") as its first action: the moment of guest entry, for the
;; start -> entry benchmark. Built by bench/guests.py (world `clock` in wit/).
(module
  ;; retptr: datetime = {u64 seconds @0, u32 nanoseconds @8}
  (import "wasi:clocks/wall-clock@0.2.0" "now" (func $now (param i32)))
  (import "wasi:cli/stdout@0.2.0" "get-stdout" (func $get_stdout (result i32)))
  ;; (self, contents.ptr, contents.len, retptr)
  (import "wasi:io/streams@0.2.0" "[method]output-stream.blocking-write-and-flush"
    (func $write_and_flush (param i32 i32 i32 i32)))
  ;; 0..16: the datetime; 32..64: the decimal text, written backwards from 64; 64..76: write result.
  (memory (export "memory") 1)

  (func (export "wasi:cli/run@0.2.0#run") (result i32)
    (local $ns i64) (local $at i32)
    (call $now (i32.const 0))
    (local.set $ns
      (i64.add
        (i64.mul (i64.load (i32.const 0)) (i64.const 1000000000))
        (i64.extend_i32_u (i32.load (i32.const 8)))))
    (local.set $at (i32.const 63))
    (i32.store8 (local.get $at) (i32.const 10))                    ;; '\n'
    (loop $digit
      (local.set $at (i32.sub (local.get $at) (i32.const 1)))
      (i32.store8 (local.get $at)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $ns) (i64.const 10)))))
      (local.set $ns (i64.div_u (local.get $ns) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $ns) (i64.const 0))))
    (call $write_and_flush
      (call $get_stdout) (local.get $at) (i32.sub (i32.const 64) (local.get $at)) (i32.const 64))
    (i32.load8_u (i32.const 64)))                                  ;; ok = 0, error = 1
)
