;; Asks poll_oneoff to sleep for 5 seconds on the monotonic clock, then exits with the
;; errno poll_oneoff returned (0 if it slept).
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; subscription at 0: userdata u64, tag u8 = 0 (clock) at 8,
    ;; clock: id u32 = 1 (monotonic) at 16, timeout u64 at 24, precision u64 at 32, flags u16 at 40
    (i64.store (i32.const 0) (i64.const 7))
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 5000000000))
    (i64.store (i32.const 32) (i64.const 0))
    (i32.store16 (i32.const 40) (i32.const 0))
    ;; one event out at 64, count of events at 128
    (call $proc_exit (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))
