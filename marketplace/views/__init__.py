"""The browser UI: function views over the services and selectors, one module a resource.

One view serves a page and, for htmx requests, a fragment of it (`"page.html#fragment"`,
Django's template partials). Every form works without JavaScript: a POST that succeeds
redirects (POST/redirect/GET), one that fails renders the form with its errors next to
the fields. Forms that move money carry an idempotency key made when they were rendered,
so submitting the same form twice has one effect.

The helpers every module shares (the htmx-aware login_required, fragment rendering, the
money-form submit) live in `common`. Like the rest of `marketplace`, these views never
import the executor app `execution`; they reach its records through the task (`task.receipt`)
and use only its WASM engine, `execution.engine`, which imports nothing of the project.
"""
