;; hello-module.wat -- a WASI preview 1 ("wasip1") core module, no component.
;;
;; `_start` writes "Hello from a wasip1 module!\n" to fd 1 with fd_write and
;; then calls proc_exit: status 0 if the write succeeded, 1 otherwise.
;; Built by examples/build.sh with `wasm-tools parse` only.
(module
  ;; fd_write(fd, iovs, iovs_len, nwritten_out) -> errno
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  ;; proc_exit(status): does not return.
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 1)
  (data (i32.const 16) "Hello from a wasip1 module!\n") ;; 28 bytes

  (func $start (export "_start")
    ;; One iovec at address 0: { buf = 16, buf_len = 28 }; nwritten at 8.
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 28))
    (call $proc_exit
      (i32.ne
        (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
        (i32.const 0))))
)
