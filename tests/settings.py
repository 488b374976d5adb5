"""Settings of the test suite: the project's, loaded in development mode.

DEBUG is off unless set, and production settings (no generated keys, TLS-only cookies, the
dev funding provider off) would fail or redirect every test, so the suite loads them with
DEBUG=true as `make run` does. It is exported before the project's settings are read, so
that worker processes the tests start (tests/workers.py) inherit it. pytest-django still
switches `settings.DEBUG` off while tests run, as Django's runner does.
"""

from __future__ import annotations

import os

os.environ["DEBUG"] = "true"

from marketplace.settings import *  # noqa: F403
