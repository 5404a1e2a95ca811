;; hello.wat -- a wasi:cli@0.2.0 command written directly in WebAssembly text.
;;
;; Built into a component by examples/build.sh with wasm-tools only
;; (parse -> component embed wit/ --world hello -> component new).
;;
;; `wasi:cli/run@0.2.0#run`:
;;   1. prints "Hello from wasm-oci!\n" to stdout;
;;   2. prints every element of get-arguments as "arg: <value>\n"
;;      (hosts usually pass the program name as the first one);
;;   3. prints "GREETING=<value>\n" for the env var GREETING, if set;
;;   4. prints the content of /data/greeting.txt verbatim, if it can be
;;      opened through a preopened directory (a preopen named "/", "/data",
;;      "data", ... -- any preopen whose name is a path prefix of it);
;;   5. if env var EXIT_CODE is set, calls wasi:cli/exit@0.2.0 `exit`:
;;      "0" -> exit(ok) (status 0); anything else -> exit(err) (status 1).
;;      WASI 0.2.0 has no way to report other codes (exit-with-code is
;;      @unstable and not in 0.2.0). Without EXIT_CODE, run returns ok.
;;
;; Canonical ABI notes (see the WIT in wit/):
;;   - lists/strings the host returns are allocated through the exported
;;     `cabi_realloc` (a bump allocator; nothing is ever freed);
;;   - results that do not fit in one core value are written to a return
;;     area whose address is the last parameter ($RET = 1024 below).
(module
  (import "wasi:cli/stdout@0.2.0" "get-stdout"
    (func $get_stdout (result i32)))
  ;; (self, contents.ptr, contents.len, retptr); writes at most 4096 bytes.
  ;; retptr: result<_, stream-error>  = {u8 tag @0, stream-error @4..12}
  (import "wasi:io/streams@0.2.0" "[method]output-stream.blocking-write-and-flush"
    (func $write_and_flush (param i32 i32 i32 i32)))
  ;; retptr: list<string> = {ptr @0, len @4}; element = {ptr, len} (8 bytes)
  (import "wasi:cli/environment@0.2.0" "get-arguments"
    (func $get_arguments (param i32)))
  ;; retptr: list<tuple<string, string>>; element = {kptr, klen, vptr, vlen} (16 bytes)
  (import "wasi:cli/environment@0.2.0" "get-environment"
    (func $get_environment (param i32)))
  ;; status: result -> 0 = ok, 1 = err. Does not return.
  (import "wasi:cli/exit@0.2.0" "exit"
    (func $exit (param i32)))
  ;; retptr: list<tuple<own<descriptor>, string>>; element = {handle, ptr, len} (12 bytes)
  (import "wasi:filesystem/preopens@0.2.0" "get-directories"
    (func $get_directories (param i32)))
  ;; (self, path-flags, path.ptr, path.len, open-flags, descriptor-flags, retptr)
  ;; retptr: result<own<descriptor>, error-code> = {u8 tag @0, handle|u8 code @4}
  (import "wasi:filesystem/types@0.2.0" "[method]descriptor.open-at"
    (func $open_at (param i32 i32 i32 i32 i32 i32 i32)))
  ;; (self, length, offset, retptr)
  ;; retptr: result<tuple<list<u8>, bool>, error-code>
  ;;         = {u8 tag @0, list.ptr @4, list.len @8, u8 eof @12}
  (import "wasi:filesystem/types@0.2.0" "[method]descriptor.read"
    (func $read (param i32 i64 i64 i32)))
  (import "wasi:filesystem/types@0.2.0" "[resource-drop]descriptor"
    (func $drop_descriptor (param i32)))

  ;; Memory map: 0..1024 constant strings, 1024..1088 return area ($RET),
  ;; 4096.. heap for cabi_realloc.
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (global $stdout (mut i32) (i32.const 0))

  (data (i32.const 64)  "Hello from wasm-oci!\n") ;; 21 bytes
  (data (i32.const 96)  "arg: ")                  ;; 5 bytes
  (data (i32.const 104) "\n")                     ;; 1 byte
  (data (i32.const 112) "GREETING=")              ;; 9 bytes; key = first 8
  (data (i32.const 128) "EXIT_CODE")              ;; 9 bytes
  (data (i32.const 144) "/data/greeting.txt")     ;; 18 bytes

  ;; cabi_realloc(old_ptr, old_size, align, new_size) -> ptr: bump allocator.
  (func $cabi_realloc (export "cabi_realloc")
    (param $old i32) (param $old_size i32) (param $align i32) (param $new_size i32)
    (result i32)
    (local $ptr i32) (local $end i32) (local $have i32)
    ;; ptr = align_up(heap, align)
    (local.set $ptr
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (local.set $end (i32.add (local.get $ptr) (local.get $new_size)))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow
                (i32.shr_u
                  (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535))
                  (i32.const 16)))
              (i32.const -1))
          (then unreachable))))
    (global.set $heap (local.get $end))
    (if (local.get $old)
      (then
        (memory.copy (local.get $ptr) (local.get $old)
          (select (local.get $old_size) (local.get $new_size)
            (i32.lt_u (local.get $old_size) (local.get $new_size))))))
    (local.get $ptr))

  ;; Write len bytes at ptr to stdout, 4096 bytes per call; stop on error.
  (func $print (param $ptr i32) (param $len i32)
    (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $len)))
        (local.set $n
          (select (local.get $len) (i32.const 4096)
            (i32.lt_u (local.get $len) (i32.const 4096))))
        (call $write_and_flush
          (global.get $stdout) (local.get $ptr) (local.get $n) (i32.const 1024))
        (br_if $done (i32.load8_u (i32.const 1024)))
        (local.set $ptr (i32.add (local.get $ptr) (local.get $n)))
        (local.set $len (i32.sub (local.get $len) (local.get $n)))
        (br $next))))

  ;; 1 if the n bytes at a and b are equal, else 0.
  (func $mem_eq (param $a i32) (param $b i32) (param $n i32) (result i32)
    (block $differ
      (loop $next
        (if (i32.eqz (local.get $n)) (then (return (i32.const 1))))
        (br_if $differ
          (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b))))
        (local.set $a (i32.add (local.get $a) (i32.const 1)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; Parse a decimal 0..255; -1 if empty, not all digits, or too large.
  (func $parse_u8 (param $ptr i32) (param $len i32) (result i32)
    (local $acc i32) (local $d i32)
    (if (i32.eqz (local.get $len)) (then (return (i32.const -1))))
    (loop $next
      (local.set $d (i32.sub (i32.load8_u (local.get $ptr)) (i32.const 48)))
      (if (i32.gt_u (local.get $d) (i32.const 9)) (then (return (i32.const -1))))
      (local.set $acc
        (i32.add (i32.mul (local.get $acc) (i32.const 10)) (local.get $d)))
      (if (i32.gt_u (local.get $acc) (i32.const 255)) (then (return (i32.const -1))))
      (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
      (local.set $len (i32.sub (local.get $len) (i32.const 1)))
      (br_if $next (local.get $len)))
    (local.get $acc))

  ;; Copy the whole content of the open file $fd to stdout.
  (func $cat (param $fd i32)
    (local $offset i64) (local $len i32)
    (block $done
      (loop $next
        (call $read (local.get $fd) (i64.const 4096) (local.get $offset) (i32.const 1024))
        (br_if $done (i32.load8_u (i32.const 1024)))            ;; err(error-code)
        (local.set $len (i32.load (i32.const 1032)))
        (call $print (i32.load (i32.const 1028)) (local.get $len))
        (local.set $offset
          (i64.add (local.get $offset) (i64.extend_i32_u (local.get $len))))
        (br_if $done (i32.load8_u (i32.const 1036)))            ;; eof
        (br_if $done (i32.eqz (local.get $len)))
        (br $next))))

  ;; Print /data/greeting.txt through the first preopen that can open it.
  (func $print_greeting_file
    (local $list i32) (local $count i32) (local $i i32) (local $elem i32)
    (local $name i32) (local $name_len i32)
    (local $target i32) (local $target_len i32) (local $fd i32) (local $done i32)
    (call $get_directories (i32.const 1024))
    (local.set $list (i32.load (i32.const 1024)))
    (local.set $count (i32.load (i32.const 1028)))
    (block $end
      (loop $next
        (br_if $end (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $elem
          (i32.add (local.get $list) (i32.mul (local.get $i) (i32.const 12))))
        (local.set $name (i32.load offset=4 (local.get $elem)))
        (local.set $name_len (i32.load offset=8 (local.get $elem)))
        ;; Drop trailing slashes: "/" -> "", "/data/" -> "/data".
        (block $trimmed
          (loop $trim
            (br_if $trimmed (i32.eqz (local.get $name_len)))
            (br_if $trimmed
              (i32.ne
                (i32.load8_u
                  (i32.sub (i32.add (local.get $name) (local.get $name_len)) (i32.const 1)))
                (i32.const 47)))                                 ;; '/'
            (local.set $name_len (i32.sub (local.get $name_len) (i32.const 1)))
            (br $trim)))
        ;; Absolute preopen names match "/data/greeting.txt", relative ones
        ;; match "data/greeting.txt".
        (local.set $target (i32.const 144))
        (local.set $target_len (i32.const 18))
        (if (i32.and
              (i32.ne (local.get $name_len) (i32.const 0))
              (i32.ne (i32.load8_u (local.get $name)) (i32.const 47)))
          (then
            (local.set $target (i32.const 145))
            (local.set $target_len (i32.const 17))))
        ;; Match if name is a prefix of target followed by '/'.
        (if (i32.and
              (i32.eqz (local.get $done))
              (i32.lt_u (local.get $name_len) (local.get $target_len)))
          (then
            (if (i32.and
                  (call $mem_eq (local.get $name) (local.get $target) (local.get $name_len))
                  (i32.eq
                    (i32.load8_u (i32.add (local.get $target) (local.get $name_len)))
                    (i32.const 47)))
              (then
                ;; open-at(dir, symlink-follow, rest, open-flags {}, descriptor-flags {read})
                (call $open_at
                  (i32.load (local.get $elem))
                  (i32.const 1)
                  (i32.add (i32.add (local.get $target) (local.get $name_len)) (i32.const 1))
                  (i32.sub (i32.sub (local.get $target_len) (local.get $name_len)) (i32.const 1))
                  (i32.const 0)
                  (i32.const 1)
                  (i32.const 1024))
                (if (i32.eqz (i32.load8_u (i32.const 1024)))
                  (then
                    (local.set $fd (i32.load (i32.const 1028)))
                    (call $cat (local.get $fd))
                    (call $drop_descriptor (local.get $fd))
                    (local.set $done (i32.const 1))))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    ;; Release the preopen handles we were given.
    (local.set $i (i32.const 0))
    (block $end
      (loop $next
        (br_if $end (i32.ge_u (local.get $i) (local.get $count)))
        (call $drop_descriptor
          (i32.load (i32.add (local.get $list) (i32.mul (local.get $i) (i32.const 12)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))

  ;; wasi:cli/run@0.2.0 run: func() -> result  (returns 0 = ok)
  (func $run (export "wasi:cli/run@0.2.0#run") (result i32)
    (local $list i32) (local $count i32) (local $i i32) (local $elem i32)
    (local $key i32) (local $key_len i32) (local $val i32) (local $val_len i32)
    (local $exit_code i32)
    (global.set $stdout (call $get_stdout))
    (call $print (i32.const 64) (i32.const 21))

    ;; Arguments.
    (call $get_arguments (i32.const 1024))
    (local.set $list (i32.load (i32.const 1024)))
    (local.set $count (i32.load (i32.const 1028)))
    (block $end
      (loop $next
        (br_if $end (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $elem
          (i32.add (local.get $list) (i32.shl (local.get $i) (i32.const 3))))
        (call $print (i32.const 96) (i32.const 5))
        (call $print (i32.load (local.get $elem)) (i32.load offset=4 (local.get $elem)))
        (call $print (i32.const 104) (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))

    ;; Environment: GREETING and EXIT_CODE.
    (local.set $exit_code (i32.const -2))                        ;; -2 = unset
    (call $get_environment (i32.const 1024))
    (local.set $list (i32.load (i32.const 1024)))
    (local.set $count (i32.load (i32.const 1028)))
    (local.set $i (i32.const 0))
    (block $end
      (loop $next
        (br_if $end (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $elem
          (i32.add (local.get $list) (i32.shl (local.get $i) (i32.const 4))))
        (local.set $key (i32.load (local.get $elem)))
        (local.set $key_len (i32.load offset=4 (local.get $elem)))
        (local.set $val (i32.load offset=8 (local.get $elem)))
        (local.set $val_len (i32.load offset=12 (local.get $elem)))
        (if (i32.eq (local.get $key_len) (i32.const 8))
          (then
            (if (call $mem_eq (local.get $key) (i32.const 112) (i32.const 8))
              (then
                (call $print (i32.const 112) (i32.const 9))
                (call $print (local.get $val) (local.get $val_len))
                (call $print (i32.const 104) (i32.const 1))))))
        (if (i32.eq (local.get $key_len) (i32.const 9))
          (then
            (if (call $mem_eq (local.get $key) (i32.const 128) (i32.const 9))
              (then
                (local.set $exit_code
                  (call $parse_u8 (local.get $val) (local.get $val_len)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))

    (call $print_greeting_file)

    ;; EXIT_CODE=0 -> exit(ok); any other value (1-255 or invalid) -> exit(err).
    (if (i32.ne (local.get $exit_code) (i32.const -2))
      (then (call $exit (i32.ne (local.get $exit_code) (i32.const 0)))))
    (i32.const 0))
)
