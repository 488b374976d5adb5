"""The WASM engine: sandbox, module cache, upload validation and receipt signing.

It imports no other app of the project, so it can be reused and tested on its own.
"""
