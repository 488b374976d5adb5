;; Keeps its memory to itself.
(module
  (memory 1)
  (func (export "_start")))
