;; Imports a name WASI preview 1 does not have.
(module
  (import "wasi_snapshot_preview1" "spawn_process" (func $spawn (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (drop (call $spawn (i32.const 0)))))
