;; Declares 9000 pages (562.5 MiB) of initial memory: more than any task may have.
(module
  (memory (export "memory") 9000)
  (func (export "_start")))
