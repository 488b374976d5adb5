;; Prints every environment variable it can see, or "no environment" if there is none.
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 4)
  (data (i32.const 64) "no environment\n")
  (func (export "_start")
    (drop (call $sizes (i32.const 16) (i32.const 20)))
    (if (i32.eqz (i32.load (i32.const 16)))
      (then
        (i32.store (i32.const 0) (i32.const 64))
        (i32.store (i32.const 4) (i32.const 15))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
        (return)))
    ;; pointers at 0x10000, the NUL-separated strings at 0x20000
    (drop (call $environ_get (i32.const 0x10000) (i32.const 0x20000)))
    (i32.store (i32.const 0) (i32.const 0x20000))
    (i32.store (i32.const 4) (i32.load (i32.const 20)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const 1))))
