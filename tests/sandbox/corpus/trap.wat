;; Executes `unreachable`, as abort() and Rust panics do.
(module
  (memory (export "memory") 1)
  (func (export "_start") (unreachable)))
