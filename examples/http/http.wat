;; http.wat -- a CGI-style HTTP handler for `wasm-oci serve`, written as a
;; wasi:cli@0.2.0 command directly in WebAssembly text.
;;
;; Built into a component by examples/build.sh with wasm-tools only
;; (parse -> component embed wit/ --world http -> component new).
;;
;; `wasm-oci serve` runs a fresh instance per request with the request's CGI
;; variables as the environment and the request body on stdin; stdout is the
;; response. `wasi:cli/run@0.2.0#run`:
;;   1. writes the CGI header block to stdout:
;;        Status: 200 OK
;;        Content-Type: text/plain; charset=utf-8
;;        X-Method: <REQUEST_METHOD>     (each X- line only if the variable
;;        X-Path: <PATH_INFO>             is set)
;;        X-Query: <QUERY_STRING>
;;        X-Echo: <HTTP_X_ECHO>          (the request header X-Echo)
;;      and the blank line that ends it;
;;   2. streams stdin to stdout with ASCII a-z uppercased (64 KiB at a time,
;;      so memory use does not grow with the body);
;;   3. writes "http: uppercased <N> bytes\n" to stderr (serve logs it; it
;;      never reaches the client);
;;   4. returns ok.
;;
;; Canonical ABI notes (see the WIT in wit/):
;;   - lists/strings the host returns are allocated through the exported
;;     `cabi_realloc` (a bump allocator, reset after each body chunk);
;;   - results that do not fit in one core value are written to a return
;;     area whose address is the last parameter ($RET = 1024 below).
(module
  (import "wasi:cli/stdin@0.2.0" "get-stdin" (func $get_stdin (result i32)))
  (import "wasi:cli/stdout@0.2.0" "get-stdout" (func $get_stdout (result i32)))
  (import "wasi:cli/stderr@0.2.0" "get-stderr" (func $get_stderr (result i32)))
  ;; (self, len, retptr); retptr: result<list<u8>, stream-error>
  ;;   = {u8 tag @0, list.ptr @4, list.len @8}
  (import "wasi:io/streams@0.2.0" "[method]input-stream.blocking-read"
    (func $read (param i32 i64 i32)))
  ;; (self, contents.ptr, contents.len, retptr); at most 4096 bytes per call.
  ;; retptr: result<_, stream-error> = {u8 tag @0, ...}
  (import "wasi:io/streams@0.2.0" "[method]output-stream.blocking-write-and-flush"
    (func $write_and_flush (param i32 i32 i32 i32)))
  ;; retptr: list<tuple<string, string>>; element = {kptr, klen, vptr, vlen}
  (import "wasi:cli/environment@0.2.0" "get-environment"
    (func $get_environment (param i32)))

  ;; Memory map: 0..1024 constant strings, 1024..1088 return area,
  ;; 4096.. heap for cabi_realloc.
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (global $env (mut i32) (i32.const 0))
  (global $env_count (mut i32) (i32.const 0))
  (global $value (mut i32) (i32.const 0))
  (global $value_len (mut i32) (i32.const 0))

  (data (i32.const 0) "Status: 200 OK\nContent-Type: text/plain; charset=utf-8\n") ;; 55
  (data (i32.const 64)  "X-Method: ")          ;; 10
  (data (i32.const 80)  "REQUEST_METHOD")      ;; 14
  (data (i32.const 96)  "X-Path: ")            ;; 8
  (data (i32.const 112) "PATH_INFO")           ;; 9
  (data (i32.const 128) "X-Query: ")           ;; 9
  (data (i32.const 144) "QUERY_STRING")        ;; 12
  (data (i32.const 160) "X-Echo: ")            ;; 8
  (data (i32.const 176) "HTTP_X_ECHO")         ;; 11
  (data (i32.const 192) "\n")                 ;; 1
  (data (i32.const 200) "http: uppercased ")   ;; 17
  (data (i32.const 224) " bytes\n")           ;; 7
  ;; 256..276: scratch for decimal digits

  ;; cabi_realloc(old_ptr, old_size, align, new_size) -> ptr: bump allocator.
  (func $cabi_realloc (export "cabi_realloc")
    (param $old i32) (param $old_size i32) (param $align i32) (param $new_size i32)
    (result i32)
    (local $ptr i32) (local $end i32) (local $have i32)
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

  ;; Write len bytes at ptr to stream, 4096 bytes per call; stop on error.
  (func $write (param $stream i32) (param $ptr i32) (param $len i32)
    (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $len)))
        (local.set $n
          (select (local.get $len) (i32.const 4096)
            (i32.lt_u (local.get $len) (i32.const 4096))))
        (call $write_and_flush
          (local.get $stream) (local.get $ptr) (local.get $n) (i32.const 1024))
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

  ;; Look up env var name; on success set $value/$value_len and return 1.
  (func $getenv (param $name i32) (param $name_len i32) (result i32)
    (local $i i32) (local $elem i32)
    (block $end
      (loop $next
        (br_if $end (i32.ge_u (local.get $i) (global.get $env_count)))
        (local.set $elem
          (i32.add (global.get $env) (i32.shl (local.get $i) (i32.const 4))))
        (if (i32.eq (i32.load offset=4 (local.get $elem)) (local.get $name_len))
          (then
            (if (call $mem_eq (i32.load (local.get $elem)) (local.get $name) (local.get $name_len))
              (then
                (global.set $value (i32.load offset=8 (local.get $elem)))
                (global.set $value_len (i32.load offset=12 (local.get $elem)))
                (return (i32.const 1))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; "<label><value of env var name>\n" to stream, if the variable is set.
  (func $header (param $out i32) (param $label i32) (param $label_len i32)
                (param $name i32) (param $name_len i32)
    (if (call $getenv (local.get $name) (local.get $name_len))
      (then
        (call $write (local.get $out) (local.get $label) (local.get $label_len))
        (call $write (local.get $out) (global.get $value) (global.get $value_len))
        (call $write (local.get $out) (i32.const 192) (i32.const 1)))))

  ;; Uppercase ASCII a-z in place.
  (func $upper (param $ptr i32) (param $len i32)
    (local $c i32) (local $end i32)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $ptr) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $ptr)))
        (if (i32.lt_u (i32.sub (local.get $c) (i32.const 97)) (i32.const 26))
          (then (i32.store8 (local.get $ptr) (i32.sub (local.get $c) (i32.const 32)))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (br $next))))

  ;; Write n in decimal to stream.
  (func $write_u64 (param $out i32) (param $n i64)
    (local $p i32)
    (local.set $p (i32.const 276))
    (loop $next
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i64.store8 (local.get $p) (i64.add (i64.rem_u (local.get $n) (i64.const 10)) (i64.const 48)))
      (local.set $n (i64.div_u (local.get $n) (i64.const 10)))
      (br_if $next (i64.ne (local.get $n) (i64.const 0))))
    (call $write (local.get $out) (local.get $p) (i32.sub (i32.const 276) (local.get $p))))

  ;; wasi:cli/run@0.2.0 run: func() -> result  (returns 0 = ok)
  (func $run (export "wasi:cli/run@0.2.0#run") (result i32)
    (local $stdin i32) (local $stdout i32) (local $stderr i32)
    (local $mark i32) (local $len i32) (local $total i64)
    (local.set $stdin (call $get_stdin))
    (local.set $stdout (call $get_stdout))
    (local.set $stderr (call $get_stderr))
    (call $get_environment (i32.const 1024))
    (global.set $env (i32.load (i32.const 1024)))
    (global.set $env_count (i32.load (i32.const 1028)))

    (call $write (local.get $stdout) (i32.const 0) (i32.const 55))
    (call $header (local.get $stdout) (i32.const 64) (i32.const 10) (i32.const 80) (i32.const 14))
    (call $header (local.get $stdout) (i32.const 96) (i32.const 8) (i32.const 112) (i32.const 9))
    (call $header (local.get $stdout) (i32.const 128) (i32.const 9) (i32.const 144) (i32.const 12))
    (call $header (local.get $stdout) (i32.const 160) (i32.const 8) (i32.const 176) (i32.const 11))
    (call $write (local.get $stdout) (i32.const 192) (i32.const 1))

    ;; Body: read until the stream reports an error (closed = end of input).
    (local.set $mark (global.get $heap))
    (block $eof
      (loop $next
        (call $read (local.get $stdin) (i64.const 65536) (i32.const 1024))
        (br_if $eof (i32.load8_u (i32.const 1024)))
        (local.set $len (i32.load (i32.const 1032)))
        (call $upper (i32.load (i32.const 1028)) (local.get $len))
        (call $write (local.get $stdout) (i32.load (i32.const 1028)) (local.get $len))
        (local.set $total (i64.add (local.get $total) (i64.extend_i32_u (local.get $len))))
        (global.set $heap (local.get $mark))
        (br $next)))

    (call $write (local.get $stderr) (i32.const 200) (i32.const 17))
    (call $write_u64 (local.get $stderr) (local.get $total))
    (call $write (local.get $stderr) (i32.const 224) (i32.const 7))
    (i32.const 0))
)
