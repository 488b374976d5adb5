;; Recurses without end.
(module
  (memory (export "memory") 1)
  (func $recurse (export "_start") (call $recurse)))
