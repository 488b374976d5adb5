;; Declares 2000 pages (125 MiB) of initial memory: more than a 64 MiB task allows,
;; less than the 512 MiB upload maximum.
(module
  (memory (export "memory") 2000)
  (func (export "_start")))
