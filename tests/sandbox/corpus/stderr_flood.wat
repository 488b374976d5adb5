;; Writes 512 MiB to stderr in 64 KiB writes, then "done\n" to stdout, and returns.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 32) "done\n")
  (func (export "_start") (local $i i32)
    (memory.fill (i32.const 0x10000) (i32.const 0x45) (i32.const 0x10000))
    (loop $flood
      (i32.store (i32.const 0) (i32.const 0x10000))
      (i32.store (i32.const 4) (i32.const 0x10000))
      (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $flood (i32.lt_u (local.get $i) (i32.const 8192))))
    (i32.store (i32.const 0) (i32.const 32))
    (i32.store (i32.const 4) (i32.const 5))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
