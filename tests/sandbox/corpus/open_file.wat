;; Looks for a preopened directory (fd 3) and tries to open /etc/passwd through it, and
;; through stdin as a directory. Prints the file and exits 0 if an open succeeds;
;; otherwise exits with the errno of the first attempt.
(module
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 64) "etc/passwd")
  (func $open_and_print (param $dir i32) (result i32) (local $errno i32) (local $fd i32)
    ;; path_open(dirfd, lookupflags=1 (follow), path, path_len, oflags=0,
    ;;           rights_base=fd_read, rights_inheriting=0, fdflags=0, &fd)
    (local.set $errno (call $path_open (local.get $dir) (i32.const 1) (i32.const 64) (i32.const 10)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 16)))
    (if (local.get $errno) (then (return (local.get $errno))))
    (local.set $fd (i32.load (i32.const 16)))
    (i32.store (i32.const 0) (i32.const 0x10000))
    (i32.store (i32.const 4) (i32.const 0x10000))
    (drop (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 4) (i32.load (i32.const 8)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const 0))
    (i32.const 0))
  (func (export "_start") (local $errno i32)
    (local.set $errno (call $fd_prestat_get (i32.const 3) (i32.const 24)))
    (drop (call $open_and_print (i32.const 0)))
    (if (i32.eqz (local.get $errno)) (then (drop (call $open_and_print (i32.const 3)))))
    (call $proc_exit (local.get $errno))))
