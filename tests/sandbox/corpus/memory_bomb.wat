;; Grows memory 1 MiB at a time, touching every new page, until a grow is refused;
;; then aborts like a C program whose malloc returned NULL.
(module
  (memory (export "memory") 1)
  (func (export "_start") (local $old i32) (local $addr i32) (local $end i32)
    (loop $grow
      (local.set $old (memory.grow (i32.const 16)))
      (if (i32.eq (local.get $old) (i32.const -1)) (then (unreachable)))
      (local.set $addr (i32.mul (local.get $old) (i32.const 65536)))
      (local.set $end (i32.add (local.get $addr) (i32.const 0x100000)))
      (loop $touch
        (i32.store (local.get $addr) (i32.const 0xdeadbeef))
        (local.set $addr (i32.add (local.get $addr) (i32.const 4096)))
        (br_if $touch (i32.lt_u (local.get $addr) (local.get $end))))
      (br $grow))))
