;; spin.wat -- a wasi:cli@0.2.0 command whose run never returns.
;;
;; For kill / timeout / epoch-interruption tests: `wasi:cli/run@0.2.0#run`
;; is a tight infinite loop with no imports and no output, so the only way
;; it ends is the host interrupting it (epoch deadline, fuel, killing the
;; process). Built into a component by examples/build.sh with wasm-tools only.
(module
  (func $run (export "wasi:cli/run@0.2.0#run") (result i32)
    (loop $forever (result i32)
      (br $forever)))
)
