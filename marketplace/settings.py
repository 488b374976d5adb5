"""Settings for Agent Exchange.

Everything configurable comes from the environment through the helpers in
`marketplace.env`, which fail loudly on a malformed value instead of silently falling back
to a default.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from marketplace.api_config import SPECTACULAR, rest_framework_settings, throttle_rate
from marketplace.cache_config import cache_settings
from marketplace.env import (
    database_from_url,
    development_env_use,
    env_bool,
    env_int,
    env_list,
    env_optional,
    env_str,
)
from marketplace.queue_config import q_cluster_settings
from marketplace.storage_config import binary_storage_backend

BASE_DIR = Path(__file__).resolve().parent.parent


DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)
# `make run`'s development settings (DEBUG=true, …), read when the file exists, so that any
# manage.py command in the checkout runs as the server does. Production never has one.
DEVELOPMENT_ENV_READ = development_env_use(DATA_DIR / "dev.env")
# Production is the default: development mode (generated keys, plain-HTTP cookies, the dev
# funding provider) needs DEBUG=true, which `make run` and the test settings set. What
# depends on it is decided here, once: the test runner switches DEBUG off at run time.
DEBUG = env_bool("DEBUG", False)


def _development_secret(filename: str, make) -> str:
    """A secret generated once into the data directory, for development only."""
    path = DATA_DIR / filename
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(make())
    return path.read_text().strip()


SECRET_KEY = env_optional("SECRET_KEY") or ""
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = _development_secret("secret_key", lambda: secrets.token_urlsafe(50))


def _key_ring(name: str, filename: str, make) -> list[str]:
    """Comma-separated keys from the environment, the first one current; in development a
    single key generated once into the data directory."""
    ring = env_list(name, [])
    if ring:
        return ring
    if not DEBUG:
        raise ImproperlyConfigured(f"{name} must be set when DEBUG is off")
    return [_development_secret(filename, make)]


# Fernet keys that encrypt the voucher keys the platform keeps for browser users: the first
# encrypts, all decrypt (`manage.py rotate_custodial_keys` moves every key to the first).
CUSTODIAL_KEY_RING = _key_ring(
    "CUSTODIAL_KEY_RING",
    "custodial_key_ring",
    lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files for /api/v1/docs/, served as static files
    "django_htmx",
    "django_q",
    "marketplace",
    "escrow",
    "reputation",
    "execution",
]

MIDDLEWARE = [
    # First: a body over the limit is refused (413) before anything reads it.
    "marketplace.request_limits.RequestSizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves the collected static files (CSS, htmx) under gunicorn, with far-future caching.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # After the CSRF check: login pages' attempts are counted before the password is checked.
    "marketplace.login_throttle.LoginThrottleMiddleware",
]

ROOT_URLCONF = "marketplace.urls"
WSGI_APPLICATION = "marketplace.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                # Staff see a banner when no worker has reported (one query, staff only).
                "execution.context_processors.worker_health",
            ],
        },
    },
]

DATABASE_URL = env_optional("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(DATA_DIR / "db.sqlite3")),
            "OPTIONS": {
                # IMMEDIATE takes the write lock at BEGIN, so two writers queue on the
                # busy timeout instead of failing with "database is locked" on upgrade.
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": env_optional("SQLITE_TEST_PATH")},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(DATA_DIR / "media")))
MEDIA_URL = "media/"
# Agent binaries in storage every host can read (SPEC §17): file (MEDIA_ROOT), database (the
# default with PostgreSQL) or s3 (django-storages; the AWS_* variables in storage_config.py).
BINARY_STORAGE = env_str("BINARY_STORAGE", "database" if env_optional("DATABASE_URL") else "file")
STORAGES["binaries"] = binary_storage_backend(BINARY_STORAGE)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

# Production hardening; `manage.py check --deploy` passes with DEBUG off.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
# Trusted only when the environment names the header a TLS proxy in front sets to "https"
# (SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto): with no proxy to overwrite it, any client could
# send it and pass a plain-HTTP request off as HTTPS.
_proxy_header = env_optional("SECURE_PROXY_SSL_HEADER")
if _proxy_header and not re.fullmatch(r"[A-Za-z0-9-]+", _proxy_header):
    raise ImproperlyConfigured("SECURE_PROXY_SSL_HEADER must be a header name: X-Forwarded-Proto")
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_header.upper().replace("-", "_"), "https") if _proxy_header else None
)
X_FRAME_OPTIONS = "DENY"

# --- Money ---------------------------------------------------------------------------
# Amounts are integers in micro-credits (1 CR = 1_000_000 µCR).
PLATFORM_FEE_BPS = env_int("PLATFORM_FEE_BPS", 500)
if not 0 <= PLATFORM_FEE_BPS <= 10_000:
    raise ImproperlyConfigured("PLATFORM_FEE_BPS must be between 0 and 10000")
# Rows each system account (escrow, platform fees, ...) is split into; may only grow.
SYSTEM_ACCOUNT_SHARDS = max(1, env_int("SYSTEM_ACCOUNT_SHARDS", 16))
# The `dev` funding provider credits deposits instantly; on in development only.
DEV_FUNDING_ENABLED = env_bool("DEV_FUNDING_ENABLED", DEBUG)
MAX_DEPOSIT = env_int("MAX_DEPOSIT", 1_000_000 * 1_000_000)
# Who collects deposits and pays withdrawals out (`dev`; `test` only under the tests).
FUNDING_PROVIDER = env_str("FUNDING_PROVIDER", "dev")
# The smallest withdrawal, in µCR.
WITHDRAWAL_MIN = env_int("WITHDRAWAL_MIN", 1_000_000)
# A withdrawal or deposit still unsettled this long after it was asked is recovered: the
# provider is asked what became of it by its key.
FUNDING_RECOVER_AFTER_SECONDS = env_int("FUNDING_RECOVER_AFTER_SECONDS", 60)
# Payment channels: how long one stays open, and how long a closing one waits for late
# vouchers before it settles (0: the platform already holds the latest voucher).
CHANNEL_TTL_SECONDS = env_int("CHANNEL_TTL_SECONDS", 30 * 24 * 3600)
CHANNEL_CHALLENGE_SECONDS = env_int("CHANNEL_CHALLENGE_SECONDS", 0)
# An owner's share of a settlement is held this long (the requester's dispute window)
# before the sweep moves it to the wallet; 0 pays it straight into the wallet, undisputable.
EARNINGS_HOLD_SECONDS = env_int("EARNINGS_HOLD_SECONDS", 24 * 3600)
# Earnings the sweep releases per transaction.
EARNINGS_RELEASE_BATCH = env_int("EARNINGS_RELEASE_BATCH", 1000)
# How long an owner has to answer a dispute before it counts as accepted.
DISPUTE_RESPONSE_SECONDS = env_int("DISPUTE_RESPONSE_SECONDS", 3 * 24 * 3600)
# Live (unrevoked) API keys a user may hold at once.
API_KEYS_MAX_PER_USER = env_int("API_KEYS_MAX_PER_USER", 20)

# Ed25519 keys that sign execution receipts, base64 of the raw 32-byte private keys: the
# first signs, all verify (a receipt names its key). RECEIPT_SIGNING_KEY, the older name,
# holds a single key.
if env_optional("RECEIPT_SIGNING_KEYS") and env_optional("RECEIPT_SIGNING_KEY"):
    raise ImproperlyConfigured("set RECEIPT_SIGNING_KEYS or RECEIPT_SIGNING_KEY, not both")
RECEIPT_SIGNING_KEYS = env_list("RECEIPT_SIGNING_KEY", []) or _key_ring(
    "RECEIPT_SIGNING_KEYS",
    "receipt_signing_key",
    lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
)
# Voucher keys a requester may have at once (besides the custodial one), which bounds the
# signature checks one voucher costs.
MAX_REQUESTER_KEYS = env_int("MAX_REQUESTER_KEYS", 10)

# --- Reputation ----------------------------------------------------------------------
REPUTATION_POLICY = env_str("REPUTATION_POLICY", "reputation.policies.DefaultPolicy")
DEFAULT_MIN_REPUTATION = "30.0"
# One requester moves an agent's score by at most this many points per UTC day, up and down
# together (SPEC §13); what a requester sends beyond it is recorded but not scored.
try:
    REPUTATION_DAILY_CAP_PER_REQUESTER = Decimal(
        env_str("REPUTATION_DAILY_CAP_PER_REQUESTER", "5.0")
    )
except InvalidOperation:
    raise ImproperlyConfigured("REPUTATION_DAILY_CAP_PER_REQUESTER must be a number") from None
# A score runs from 0 to 100, so no larger cap means anything (and events store the cap in
# a score's column, which holds less than 1,000).
if not (
    REPUTATION_DAILY_CAP_PER_REQUESTER.is_finite()
    and Decimal("0.0001") <= REPUTATION_DAILY_CAP_PER_REQUESTER <= 100
):
    raise ImproperlyConfigured("REPUTATION_DAILY_CAP_PER_REQUESTER must be in [0.0001, 100]")

# --- Task limits (defaults and maxima) -----------------------------------------------
TASK_DEFAULT_FUEL = env_int("TASK_DEFAULT_FUEL", 1_000_000_000)
TASK_MAX_FUEL = env_int("TASK_MAX_FUEL", 10_000_000_000)
TASK_DEFAULT_MEMORY_MB = env_int("TASK_DEFAULT_MEMORY_MB", 64)
TASK_MAX_MEMORY_MB = env_int("TASK_MAX_MEMORY_MB", 512)
TASK_DEFAULT_TIMEOUT_MS = env_int("TASK_DEFAULT_TIMEOUT_MS", 10_000)
TASK_MAX_TIMEOUT_MS = env_int("TASK_MAX_TIMEOUT_MS", 60_000)
TASK_MAX_INPUT_BYTES = env_int("TASK_MAX_INPUT_BYTES", 1024 * 1024)
# A request body may carry a whole input JSON-escaped (up to 6 bytes a character).
DATA_UPLOAD_MAX_MEMORY_SIZE = 8 * TASK_MAX_INPUT_BYTES
MAX_ATTEMPTS = env_int("MAX_ATTEMPTS", 3)
# Tasks one requester may have pending funding, queued or running at once (SPEC §23): beyond
# it a submission is refused with 429 `too_many_tasks`. Workers are shared fairly between
# requesters whatever their backlogs (marketplace/fair_share.py).
MAX_TASKS_IN_FLIGHT = env_int("MAX_TASKS_IN_FLIGHT", 100)
if MAX_TASKS_IN_FLIGHT < 1:
    raise ImproperlyConfigured("MAX_TASKS_IN_FLIGHT must be at least 1")
# The longest deadline a submission may name, in seconds (SPEC §19: one day).
TASK_MAX_DEADLINE_SECONDS = 86_400
# Requests one web process lets wait for their task at once (`Prefer: wait`, SPEC §19); each
# holds a server thread while it waits. Beyond it a request is answered at once (202, the
# preference not applied). Keep it below the server's threads per process (README).
TASK_WAITERS_PER_PROCESS = env_int("TASK_WAITERS_PER_PROCESS", 24)
# The waiting requests' LISTEN connection (one per web process), when it must bypass a pooler
# in transaction mode that DATABASE_URL goes through (marketplace/task_wait.py).
LISTEN_DATABASE_URL = env_optional("LISTEN_DATABASE_URL")
# Task submissions per user, and per API key, as a DRF rate ("600/minute"); 429 beyond it.
TASK_SUBMIT_RATE = env_str("TASK_SUBMIT_RATE", "600/minute")
# Seconds of output-schema checking each user gets a minute (marketplace/schemas.py), and
# how long a refused schema is refused again without being compiled.
SCHEMA_CHECK_SECONDS_PER_MINUTE = env_int("SCHEMA_CHECK_SECONDS_PER_MINUTE", 10)
SCHEMA_REFUSAL_CACHE_SECONDS = env_int("SCHEMA_REFUSAL_CACHE_SECONDS", 24 * 3600)
# A running task whose lease is older than its timeout plus this margin is presumed lost.
LEASE_MARGIN_SECONDS = env_int("LEASE_MARGIN_SECONDS", 30)
# A queued task not picked up for this long is enqueued again (its message may be lost, as
# Redis loses them); recovery runs once a minute: a lost message waits this plus up to ~90 s.
REQUEUE_AFTER_SECONDS = env_int("REQUEUE_AFTER_SECONDS", 30)

# --- Sandbox -------------------------------------------------------------------------
WASM_MAX_UPLOAD_BYTES = env_int("WASM_MAX_UPLOAD_BYTES", 16 * 1024 * 1024)
# Compiling an upload runs in a child process killed past this deadline (a module can be
# built to take minutes), and a module defining more functions than this is refused first.
WASM_COMPILE_TIMEOUT_MS = env_int("WASM_COMPILE_TIMEOUT_MS", 10_000)
WASM_MAX_FUNCTIONS = env_int("WASM_MAX_FUNCTIONS", 50_000)
# Binary uploads per user (API and pages together), as a DRF rate ("10/hour").
API_UPLOAD_THROTTLE_RATE = env_str("API_UPLOAD_THROTTLE_RATE", "10/hour")
WASM_CACHE_DIR = Path(env_str("WASM_CACHE_DIR", str(DATA_DIR / "wasm-cache")))
WASM_MEMORY_CACHE_SIZE = env_int("WASM_MEMORY_CACHE_SIZE", 64)
SANDBOX_STDOUT_LIMIT = env_int("SANDBOX_STDOUT_LIMIT", 1024 * 1024)
SANDBOX_STDERR_LIMIT = env_int("SANDBOX_STDERR_LIMIT", 64 * 1024)

# --- Worker (django-q2) --------------------------------------------------------------
# The wasm deadline (TASK_MAX_TIMEOUT_MS) stays below q2's timeout, which stays below
# `retry`: q2's SIGALRM cannot interrupt wasm, so the epoch deadline must fire first.
Q_TIMEOUT = env_int("Q_TIMEOUT", TASK_MAX_TIMEOUT_MS // 1000 + 30)
Q_RETRY = env_int("Q_RETRY", Q_TIMEOUT + 30)
if not TASK_MAX_TIMEOUT_MS // 1000 + 5 <= Q_TIMEOUT < Q_RETRY:
    raise ImproperlyConfigured("need TASK_MAX_TIMEOUT_MS/1000 + 5 <= Q_TIMEOUT < Q_RETRY")
# A dispute's replay still pending this long is asked again (a lost worker), MAX_ATTEMPTS tries.
DISPUTE_REPLAY_RETRY_SECONDS = env_int("DISPUTE_REPLAY_RETRY_SECONDS", Q_RETRY)
DISPUTE_REPLAY_MAX_ATTEMPTS = env_int("DISPUTE_REPLAY_MAX_ATTEMPTS", 3)
# Every running qcluster writes a heartbeat this often; /healthz answers 503 and staff see a
# banner once none is fresher than WORKER_STALE_SECONDS.
WORKER_HEARTBEAT_SECONDS = env_int("WORKER_HEARTBEAT_SECONDS", 10)
WORKER_STALE_SECONDS = env_int("WORKER_STALE_SECONDS", 60)
if not 0 < WORKER_HEARTBEAT_SECONDS < WORKER_STALE_SECONDS:
    raise ImproperlyConfigured("need 0 < WORKER_HEARTBEAT_SECONDS < WORKER_STALE_SECONDS")
# A cluster is stalled when work it could take has waited this long and it has started nothing
# in that time (execution/liveness.py): /healthz answers 503 and its supervisor restarts it.
WORKER_STALL_SECONDS = env_int("WORKER_STALL_SECONDS", 30)
if not WORKER_HEARTBEAT_SECONDS < WORKER_STALL_SECONDS:
    raise ImproperlyConfigured("need WORKER_HEARTBEAT_SECONDS < WORKER_STALL_SECONDS")
# /metrics wants `Authorization: Bearer <METRICS_TOKEN>`; none set: open with DEBUG, else 403.
METRICS_TOKEN = env_optional("METRICS_TOKEN")
METRICS_WINDOW_SECONDS = env_int("METRICS_WINDOW_SECONDS", 300)
REDIS_URL = env_optional("REDIS_URL")
# Two queues, each served by a cluster of its own on every host (`manage.py supervise` runs
# both): task runs on TASK_QUEUE, everything else (webhook deliveries, dispute replays,
# withdrawals, the scheduled jobs) on the service queue, QUEUE_NAME, so that none of it waits
# behind a backlog of task runs (SPEC §18). django-q2 reads which queue a `qcluster` serves
# from the process's own Q_CLUSTER_NAME, which the supervisor sets per cluster: the
# deployment names its queues with QUEUE_NAME (Q_CLUSTER_NAME is still read when it is unset).
QUEUE_NAME = env_optional("QUEUE_NAME") or env_str("Q_CLUSTER_NAME", "agent-exchange")
SERVICE_QUEUE = QUEUE_NAME
TASK_QUEUE = f"{QUEUE_NAME}-tasks"
Q_WORKERS = env_int("Q_WORKERS", 1)
Q_SERVICE_WORKERS = env_int("Q_SERVICE_WORKERS", 2)
if Q_WORKERS < 1 or Q_SERVICE_WORKERS < 1:
    raise ImproperlyConfigured("Q_WORKERS and Q_SERVICE_WORKERS must be at least 1")
Q_CLUSTER = q_cluster_settings(
    service_queue=SERVICE_QUEUE,
    task_queue=TASK_QUEUE,
    service_workers=Q_SERVICE_WORKERS,
    task_workers=Q_WORKERS,
    timeout=Q_TIMEOUT,
    retry=Q_RETRY,
    redis_url=REDIS_URL,
)

# --- Webhooks ------------------------------------------------------------------------
# Non-public targets (private, loopback, link-local, …) are refused at creation and after
# DNS resolution at every delivery, unless this is on (development only, by default).
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", DEBUG)
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 5)
# Retries wait 30 s, then three times longer each time: 9 attempts span about 27 hours.
WEBHOOK_FIRST_RETRY_SECONDS = env_int("WEBHOOK_FIRST_RETRY_SECONDS", 30)
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 9)
# An endpoint whose every attempt failed for this long is disabled, with a notice.
WEBHOOK_DISABLE_AFTER_SECONDS = env_int("WEBHOOK_DISABLE_AFTER_SECONDS", 3 * 24 * 3600)

# Every throttle counts in one cache for all processes and hosts: Redis with REDIS_URL, else
# a table of the database (marketplace.cache_config).
CACHES = cache_settings(redis_url=REDIS_URL, secret_key=SECRET_KEY)

# --- Abuse limits (SPEC §23) --------------------------------------------------------
# Login attempts (the login page, the admin's, the API token endpoint) per client address and
# per username; accounts created (page and API) per client address. As DRF rates; 429 beyond
# them (marketplace/login_throttle.py).
LOGIN_THROTTLE_RATE = throttle_rate("LOGIN_THROTTLE_RATE", "10/minute")
SIGNUP_THROTTLE_RATE = throttle_rate("SIGNUP_THROTTLE_RATE", "5/hour")
# A webhook event carries a task's input and output only up to this size; past it, their
# sizes, hashes and the task's API link. Pings per endpoint, as a DRF rate; 429 beyond it.
WEBHOOK_MAX_INLINE_BYTES = env_int("WEBHOOK_MAX_INLINE_BYTES", 16 * 1024)
WEBHOOK_PING_RATE = env_str("WEBHOOK_PING_RATE", "10/minute")
# Fernet keys that encrypt webhook secrets at rest: the first encrypts, all decrypt
# (`manage.py rotate_webhook_secrets` moves every secret to the first).
WEBHOOK_KEY_RING = _key_ring(
    "WEBHOOK_KEY_RING",
    "webhook_key_ring",
    lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
)
# The account token (`Authorization: Token …`) expires this many days after it was issued.
TOKEN_TTL_DAYS = env_int("TOKEN_TTL_DAYS", 90)
if TOKEN_TTL_DAYS < 1:
    raise ImproperlyConfigured("TOKEN_TTL_DAYS must be at least 1")

# --- API -----------------------------------------------------------------------------
REST_FRAMEWORK = rest_framework_settings(upload_rate=API_UPLOAD_THROTTLE_RATE)
SPECTACULAR_SETTINGS = SPECTACULAR

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # django-q2 logs two INFO lines for every task it runs; the Task table is the record.
    "loggers": {
        "django-q": {"level": env_str("Q_LOG_LEVEL", "WARNING")},
        # The MCP SDK logs three INFO lines for every request to /mcp (its per-request
        # transport starting and stopping); the request log says the same.
        "mcp": {"level": env_str("MCP_LOG_LEVEL", "WARNING")},
    },
}
