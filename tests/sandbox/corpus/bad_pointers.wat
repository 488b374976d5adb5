;; Hands fd_write pointers outside its memory: an iovec array at 0xFFFFFFF0 (negative as
;; an i32), an iovec whose buffer runs past the end, and a result pointer past the end.
;; Exits with bit n set when attempt n failed with EFAULT (21), so 7 means all three did.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $bits i32)
    (if (i32.eq (call $fd_write (i32.const 1) (i32.const 0xFFFFFFF0) (i32.const 1) (i32.const 8))
                (i32.const 21))
      (then (local.set $bits (i32.or (local.get $bits) (i32.const 1)))))
    (i32.store (i32.const 0) (i32.const 0xFFF0))
    (i32.store (i32.const 4) (i32.const 0x100))
    (if (i32.eq (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
                (i32.const 21))
      (then (local.set $bits (i32.or (local.get $bits) (i32.const 2)))))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 4))
    (if (i32.eq (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 0xFFFFFFFE))
                (i32.const 21))
      (then (local.set $bits (i32.or (local.get $bits) (i32.const 4)))))
    (call $proc_exit (local.get $bits))))
