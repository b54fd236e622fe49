"""Settings, read from the environment.

Every integration has an embedded default so that `make run` and the tests need no services
(SQLite, an in-process Dramatiq broker, an in-memory channel layer, a local media folder and a
console push sender). Setting `DATABASE_URL`, `REDIS_URL`, `STORAGE_BACKEND=s3` and the Firebase
variables switches each part to the production service. `APP_ENV=production` turns on the safety
checks in `backend/checks.py`, which refuse to start with an unsafe setting.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url

from gpu_worker.contract import TRAINING_MAX_PHOTOS, TRAINING_MIN_PHOTOS

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)  # SQLite file, local media, models (gitignored)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# --- Core -------------------------------------------------------------------------------------

APP_ENV = os.environ.get("APP_ENV", "development").strip().lower()
IS_PRODUCTION = APP_ENV == "production"

# The default key is public (it is in this file); production refuses to start with it.
DEFAULT_SECRET_KEY = "insecure-development-key-do-not-use-in-production-0123456789"
SECRET_KEY = os.environ.get("SECRET_KEY", DEFAULT_SECRET_KEY)
DEBUG = env_bool("DEBUG", not IS_PRODUCTION)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "" if IS_PRODUCTION else "127.0.0.1,localhost,testserver,[::1]")
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS")
CSRF_TRUSTED_ORIGINS = CORS_ALLOWED_ORIGINS

INSTALLED_APPS = [
    "apps.core",  # first: configures the Dramatiq broker before any actor is declared
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "servestatic",  # its system checks of the SERVESTATIC_* settings
    "django.contrib.staticfiles",
    "channels",
    "strawberry_django",
    "apps.accounts",
    "apps.credits",
    "apps.storage",
    "apps.trends",
    "apps.notifications",
    "apps.jobs",
    "apps.purchases",
    "apps.organizations",
    "apps.generations",
    "apps.characters",
    "apps.moderation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin, GraphiQL) straight from STATIC_ROOT, before anything else does work. Async:
    # under uvicorn each file streams from an async iterator instead of being read whole on a thread.
    "backend.staticfiles.StaticFilesMiddleware",  # ServeStatic's
    "apps.core.middleware.RequestIdMiddleware",
    "apps.core.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "apps.core.middleware.StaffTimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "backend.urls"
ASGI_APPLICATION = "backend.asgi.application"
AUTH_USER_MODEL = "accounts.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "backend" / "templates"],  # the landing page, GraphiQL, admin's base_site
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files -----------------------------------------------------------------------------
# ServeStatic (the ASGI-native fork of WhiteNoise: same storage, headers and settings, SERVESTATIC_*) serves
# them from STATIC_ROOT in every mode (uvicorn serves no files itself): names carry a content hash, gzip
# copies sit beside them (brotli too where the `brotli` package is installed), and hashed files are cached
# for ten years, immutable. `collectstatic`
# fills STATIC_ROOT (`make run` runs it; production runs it in the image build). Admin's files come from
# Django; GraphiQL's from the npm packages in tools/graphiql (backend/staticfiles.py), so no page loads a CDN.
STATIC_URL = "/static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "backend.staticfiles.GraphiQLFinder",
]
GRAPHIQL_PACKAGES_DIR = BASE_DIR / "tools" / "graphiql" / "node_modules"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "servestatic.storage.CompressedManifestStaticFilesStorage"},
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

if IS_PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Database ---------------------------------------------------------------------------------

DATABASE_URL = os.environ.get("DATABASE_URL", "")
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
    if DATABASE_URL
    # IMMEDIATE: a write transaction takes SQLite's lock at BEGIN and waits up to `timeout` for it, instead
    # of failing with "database is locked" when a read turns into a write while another thread writes.
    else {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "db.sqlite3",
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    }
}
# Persistent connections: HTTP requests run on a kept pool of threads (backend/asgi.py RequestThreads), and
# workers on their own long-lived threads, so each thread keeps one connection instead of opening one per
# request. Django checks a kept connection at each request's start and end (and, with health checks,
# before reusing it). At most HTTP_REQUEST_THREADS idle request threads per server process are kept.
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 60)
HTTP_REQUEST_THREADS = env_int("HTTP_REQUEST_THREADS", 16)
# Of those, how many run their synchronous work at once (0: all, the default). One process runs Python on one
# core at a time (the GIL), and SQLite's calls release it: with twenty requests at once, a database-heavy
# request (an uncached home screen) spends a fifth of its CPU trading the GIL between threads, which 2 here
# saves; but a light request (`me`) loses ~7% of its throughput waiting its turn, and a network database's
# calls are real waits that other threads should fill (bench/README.md, "the GIL convoy").
HTTP_REQUEST_THREADS_RUNNING = env_int("HTTP_REQUEST_THREADS_RUNNING", 0)
# The server freezes what start-up allocated out of the garbage collector's reach (backend/asgi.py).
GC_FREEZE_AT_START = env_bool("GC_FREEZE_AT_START", True)

# --- Redis: broker, channel layer and cache ---------------------------------------------------

REDIS_URL = os.environ.get("REDIS_URL", "")
# "stub": the in-process broker with worker threads inside the server; "redis": separate workers.
DRAMATIQ_BROKER = "redis" if REDIS_URL else "stub"
# In the embedded mode the ASGI server runs the Django queues itself; EMBEDDED_WORKER=0 turns it off.
EMBEDDED_WORKER = env_bool("EMBEDDED_WORKER", DRAMATIQ_BROKER == "stub")
DRAMATIQ_WORKER_THREADS = env_int("DRAMATIQ_WORKER_THREADS", 4)
# How long an idle backend worker waits at most before it polls the GPU workers' job events again (the
# other queues: Dramatiq's worker timeout, 1 s). Progress reaches the app this much later at worst.
JOB_EVENTS_POLL_MS = env_int("JOB_EVENTS_POLL_MS", 20)

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # channels-redis waits for messages with a 5 s BZPOPMIN; redis-py's default 5 s socket timeout
            # would cut that read first and drop every websocket idle for 5 s. The timeout must exceed it.
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
                "capacity": 1000,
                "expiry": 30,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # One pool per process: Django makes a cache object per request (backend/redis_pool.py).
            "OPTIONS": {"pool_class": "backend.redis_pool.SharedConnectionPool"},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # Idempotency claims, throttles and scheduler slots are correctness state: LocMem's default of 300
    # entries would cull live ones (a scheduler slot claimed twice, say).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

# --- Storage ----------------------------------------------------------------------------------

STORAGE_BACKEND = os.environ.get("STORAGE_BACKEND", "local").strip().lower()  # local | s3
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "")  # for signed URLs served by Django
S3_BUCKET = os.environ.get("S3_BUCKET", "")
S3_ENDPOINT_URL = os.environ.get("S3_ENDPOINT_URL") or None
S3_REGION = os.environ.get("S3_REGION", "us-east-1")
UPLOAD_URL_TTL_SECONDS = min(env_int("UPLOAD_URL_TTL_SECONDS", 900), 900)
DOWNLOAD_URL_TTL_SECONDS = min(env_int("DOWNLOAD_URL_TTL_SECONDS", 900), 3600)
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 15 * 1024 * 1024)
# Any other request body (GraphQL documents with variables) is refused above this, before it is buffered.
MAX_REQUEST_BYTES = env_int("MAX_REQUEST_BYTES", 1024 * 1024)
UPLOAD_MAX_PIXELS = env_int("UPLOAD_MAX_PIXELS", 40_000_000)
UPLOADS_PER_REQUEST_MAX = env_int("UPLOADS_PER_REQUEST_MAX", 20)
# Upload targets one user may be issued per window (requestUploads counts each target).
UPLOAD_ISSUE_MAX_PER_WINDOW = env_int("UPLOAD_ISSUE_MAX_PER_WINDOW", 200)
UPLOAD_ISSUE_WINDOW_SECONDS = env_int("UPLOAD_ISSUE_WINDOW_SECONDS", 3600)

# --- Push and Firebase ------------------------------------------------------------------------

FIREBASE_CREDENTIALS = os.environ.get("FIREBASE_CREDENTIALS", "")  # path to a service-account JSON
# Enough alone for signInWithFirebase (ID-token checks need only the project id and Google's public
# certificates); taken from the service-account JSON when unset. See apps/accounts/firebase.py.
FIREBASE_PROJECT_ID = os.environ.get("FIREBASE_PROJECT_ID", "")
# Timeout of firebase-admin's calls to Google (the certificate fetch of a sign-in among them).
FIREBASE_HTTP_TIMEOUT_SECONDS = env_int("FIREBASE_HTTP_TIMEOUT_SECONDS", 10)
# Tolerated clock difference with Google when checking an ID token's iat/exp (0 to 60).
FIREBASE_CLOCK_SKEW_SECONDS = env_int("FIREBASE_CLOCK_SKEW_SECONDS", 5)
PUSH_BACKEND = os.environ.get("PUSH_BACKEND", "fcm" if FIREBASE_CREDENTIALS else "console")
# Delivery of each push (apps/notifications): attempts in all, then FAILED; exponential backoff with jitter
# between attempts, never shorter than FCM's Retry-After. A claimed message whose worker went silent this
# long is taken over (above one FCM call with firebase-admin's own retries).
PUSH_MAX_ATTEMPTS = env_int("PUSH_MAX_ATTEMPTS", 6)
PUSH_RETRY_MIN_BACKOFF_MS = env_int("PUSH_RETRY_MIN_BACKOFF_MS", 5_000)
PUSH_RETRY_MAX_BACKOFF_MS = env_int("PUSH_RETRY_MAX_BACKOFF_MS", 10 * 60_000)
PUSH_SENDING_LEASE_SECONDS = env_int("PUSH_SENDING_LEASE_SECONDS", 120)
# Deep links in push data: <scheme>://generations/<id>, <scheme>://characters/<id>.
PUSH_DEEP_LINK_SCHEME = os.environ.get("PUSH_DEEP_LINK_SCHEME", "diffuse")

# --- Soul IDs (characters) -------------------------------------------------------------------

# The biometric consent shown in the app: its version is recorded with each consent (with the hash of
# apps/characters/consent.py's text of that version).
CHARACTERS_CONSENT_VERSION = os.environ.get("CHARACTERS_CONSENT_VERSION", "2026-11-01")
CHARACTERS_MAX_PER_USER = env_int("CHARACTERS_MAX_PER_USER", 3)
# Photos of one Soul ID: the checked, distinct ones training needs, and the most it takes in all.
CHARACTERS_MIN_PHOTOS = TRAINING_MIN_PHOTOS  # the GPU worker's limits: one source of truth
CHARACTERS_MAX_PHOTOS = TRAINING_MAX_PHOTOS
# Biometric data is erased after this long without use (BIPA: at most 3 years).
CHARACTERS_RETENTION_DAYS = min(env_int("CHARACTERS_RETENTION_DAYS", 365), 3 * 365)
# Training: its price (held at trainCharacter, charged at READY, released on failure) and the route the
# LoRA is made for (a LoRA is used only on routes of the same base model).
CHARACTERS_TRAINING_CREDITS = env_int("CHARACTERS_TRAINING_CREDITS", 40)
# The one job watchdog (apps/jobs): a training silent this long lost its worker (the trainer reports
# every step); one that waited this long in the training lane expires, released.
CHARACTERS_TRAINING_STUCK_AFTER_SECONDS = env_int("CHARACTERS_TRAINING_STUCK_AFTER_SECONDS", 15 * 60)
CHARACTERS_TRAINING_QUEUE_MAX_WAIT_SECONDS = env_int("CHARACTERS_TRAINING_QUEUE_MAX_WAIT_SECONDS", 6 * 3600)
CHARACTERS_TRAINING_ROUTE = os.environ.get(
    "CHARACTERS_TRAINING_ROUTE", "tiny-wan" if DRAMATIQ_BROKER == "stub" else "wan2.2-ti2v-5b"
)

# --- GPU models -------------------------------------------------------------------------------

MODEL_ROOT = Path(os.environ.get("MODEL_ROOT", VAR_DIR / "models"))

# --- AI label (C2PA) -------------------------------------------------------------------------

# Every delivered video carries a signed C2PA manifest saying a generative model made it; the GPU workers
# sign (gpu_worker/settings.py reads the same C2PA_* variables, and the embedded mode's lanes run here).
# A deploy without the signing material fails `check --deploy` unless C2PA_DISABLED says so on purpose.
C2PA_SIGN_CERT = os.environ.get("C2PA_SIGN_CERT", "").strip()
C2PA_SIGN_KEY = os.environ.get("C2PA_SIGN_KEY", "").strip()
C2PA_DISABLED = env_bool("C2PA_DISABLED", False)
# --- Moderation (apps/moderation; the image classifier runs on the GPU workers, gpu_worker/moderation.py) --

# The image classifier: a transformers image-classification folder under the GPU workers' MODEL_ROOT (its
# labels are the categories). Empty: image moderation is off (the embedded mode; production refuses to
# start so unless MODERATION_IMAGES_DISABLED says it is meant).
MODERATION_IMAGE_MODEL = os.environ.get("MODERATION_IMAGE_MODEL", "").strip()
MODERATION_IMAGES_DISABLED = env_bool("MODERATION_IMAGES_DISABLED", False)
# The score (0..1) at or above which a category flags an image, as JSON; a trend may only lower them.
MODERATION_IMAGE_THRESHOLDS = json.loads(os.environ.get("MODERATION_IMAGE_THRESHOLDS") or '{"nsfw": 0.7}')
MODERATION_OUTPUT_FRAMES = env_int("MODERATION_OUTPUT_FRAMES", 4)  # frames of an output classified

# --- Generations ------------------------------------------------------------------------------

# The GPU lanes inside this process (gpu_worker.actors.start_embedded, tiny-wan on the CPU), next to the
# embedded Django worker. On by default in the embedded mode; services mode runs `python -m gpu_worker`.
EMBEDDED_GPU_WORKER = env_bool("EMBEDDED_GPU_WORKER", DRAMATIQ_BROKER == "stub")
# Every generation runs on this route when set (the embedded mode has only tiny-wan); empty: route by
# the trend's preference, tier, lane and inputs (apps/generations/routing.py).
GENERATIONS_ROUTE_OVERRIDE = os.environ.get(
    "GENERATIONS_ROUTE_OVERRIDE", "tiny-wan" if DRAMATIQ_BROKER == "stub" else ""
)
# Free prompts (no trend): their route, minimum prices per tier (the render's cost decides above them:
# apps/generations/pricing.py) and the durations offered.
GENERATIONS_DEFAULT_ROUTE = os.environ.get("GENERATIONS_DEFAULT_ROUTE", "wan2.2-ti2v-5b")
# The text of the visible mark in a corner of the videos whose tier's render profile asks for one (by
# default DRAFT only: gpu_worker.contract.RenderProfile.watermark_for; routes change it per tier in admin).
GENERATIONS_WATERMARK_TEXT = os.environ.get("GENERATIONS_WATERMARK_TEXT", "AI generated")
GENERATIONS_PROMPT_PRICES = {
    "DRAFT": env_int("GENERATIONS_PROMPT_PRICE_DRAFT", 1),
    "STANDARD": env_int("GENERATIONS_PROMPT_PRICE_STANDARD", 4),
    "CINEMA": env_int("GENERATIONS_PROMPT_PRICE_CINEMA", 10),
}
GENERATIONS_PROMPT_DURATIONS = [int(v) for v in env_list("GENERATIONS_PROMPT_DURATIONS", "5,8")]
GENERATIONS_PROMPT_MAX_CHARS = env_int("GENERATIONS_PROMPT_MAX_CHARS", 500)
# The ECONOMY lane costs this much less (percent of the price, rounded down, never below 1 credit).
GENERATIONS_ECONOMY_DISCOUNT_PERCENT = env_int("GENERATIONS_ECONOMY_DISCOUNT_PERCENT", 25)
# finalizeGeneration: take what the draft was charged off the final's price (never below 1 credit).
GENERATIONS_FINAL_CREDITS_DRAFT = env_bool("GENERATIONS_FINAL_CREDITS_DRAFT", False)
# Queued + running generations one user may have at once (RATE_LIMITED beyond).
GENERATIONS_MAX_ACTIVE_PER_USER = env_int("GENERATIONS_MAX_ACTIVE_PER_USER", 3)
# An organization's generations not yet finished (RATE_LIMITED beyond); those past its window
# (Organization.max_active_generations, admin) wait unsent for their share of the lanes.
GENERATIONS_MAX_ACTIVE_PER_ORGANIZATION = env_int("GENERATIONS_MAX_ACTIVE_PER_ORGANIZATION", 10_000)
# A retryable failure (out of memory, a lost worker) is dispatched again on the same route this many
# times, after a backoff that doubles from the base, then on the route's fallback; at most MAX_ATTEMPTS.
GENERATIONS_RETRIES_PER_ROUTE = env_int("GENERATIONS_RETRIES_PER_ROUTE", 1)
GENERATIONS_RETRY_BACKOFF_SECONDS = float(os.environ.get("GENERATIONS_RETRY_BACKOFF_SECONDS") or 15.0)
GENERATIONS_MAX_ATTEMPTS = env_int("GENERATIONS_MAX_ATTEMPTS", 4)
# A RUNNING generation silent this long lost its worker (WORKER_LOST); a QUEUED one waiting this long
# expires (EXPIRED). Both release the hold. Checked by a watchdog message per attempt.
GENERATIONS_STUCK_AFTER_SECONDS = env_int("GENERATIONS_STUCK_AFTER_SECONDS", 15 * 60)
GENERATIONS_QUEUE_MAX_WAIT_SECONDS = env_int("GENERATIONS_QUEUE_MAX_WAIT_SECONDS", 6 * 3600)
# GPU workers serving the lanes, for the queue-wait part of ETAs.
GENERATIONS_GPU_CAPACITY = env_int("GENERATIONS_GPU_CAPACITY", 1)
# How long a first request holds its idempotency key against a concurrent duplicate.
GENERATIONS_IDEMPOTENCY_CLAIM_SECONDS = env_int("GENERATIONS_IDEMPOTENCY_CLAIM_SECONDS", 60)

# --- Organizations: REST API keys and webhooks (apps/organizations, rest_api/) ---------------------

# Webhook attempts after the first, in seconds (exponential, about a day in all); then the delivery fails.
WEBHOOKS_RETRY_DELAYS_SECONDS = [
    float(v) for v in env_list("WEBHOOKS_RETRY_DELAYS_SECONDS", "10,60,300,1800,7200,21600,43200,43200")
]
WEBHOOKS_TIMEOUT_SECONDS = float(os.environ.get("WEBHOOKS_TIMEOUT_SECONDS") or 10.0)
# An endpoint whose deliveries failed every attempt this many times in a row is disabled (admin shows why).
WEBHOOKS_DISABLE_AFTER_FAILED_DELIVERIES = env_int("WEBHOOKS_DISABLE_AFTER_FAILED_DELIVERIES", 5)
# Endpoints on 127.0.0.0/8 and ::1 (tests, development); production refuses it. Private and link-local
# targets are never allowed.
WEBHOOKS_ALLOW_LOOPBACK = env_bool("WEBHOOKS_ALLOW_LOOPBACK", False)
# A delivery still pending this long past its due time lost its message: the scheduler's sweep (every
# WEBHOOKS_RESEND_INTERVAL_SECONDS) sends it again.
WEBHOOKS_RESEND_AFTER_SECONDS = env_int("WEBHOOKS_RESEND_AFTER_SECONDS", 600)
WEBHOOKS_RESEND_INTERVAL_SECONDS = env_int("WEBHOOKS_RESEND_INTERVAL_SECONDS", 300)
# Images by URL (`image_url` on /v1/generations): fetched inline by the create, within one deadline and
# UPLOAD_MAX_BYTES, from public addresses only (apps/core/outbound.py); loopback for tests and development,
# which production refuses.
IMAGE_URL_TIMEOUT_SECONDS = float(os.environ.get("IMAGE_URL_TIMEOUT_SECONDS") or 10.0)
IMAGE_URL_ALLOW_LOOPBACK = env_bool("IMAGE_URL_ALLOW_LOOPBACK", False)
# REST /v1: items of one batch request, and the page size of lists.
REST_BATCH_MAX_ITEMS = 100
REST_PAGE_MAX = 100

# --- GraphQL ----------------------------------------------------------------------------------

GRAPHQL_INTROSPECTION = env_bool("GRAPHQL_INTROSPECTION", not IS_PRODUCTION)
GRAPHQL_IDE = env_bool("GRAPHQL_IDE", not IS_PRODUCTION)
GRAPHQL_MAX_DEPTH = env_int("GRAPHQL_MAX_DEPTH", 12)
GRAPHQL_MAX_ALIASES = env_int("GRAPHQL_MAX_ALIASES", 15)
GRAPHQL_MAX_TOKENS = env_int("GRAPHQL_MAX_TOKENS", 2000)
# Queries complete through plans compiled once per document (graphql_schema/lean.py); 0 turns that off.
GRAPHQL_LEAN_COMPLETION = env_bool("GRAPHQL_LEAN_COMPLETION", True)
# Automatic persisted queries (Apollo): how long a registered document stays in the cache, and the
# max-age of an anonymous GET answered by hash (signed-in ones are private, max-age=0).
GRAPHQL_APQ_TTL_SECONDS = env_int("GRAPHQL_APQ_TTL_SECONDS", 7 * 24 * 3600)
GRAPHQL_APQ_PUBLIC_MAX_AGE = env_int("GRAPHQL_APQ_PUBLIC_MAX_AGE", 60)
GRAPHQL_WS_INIT_TIMEOUT_SECONDS = env_int("GRAPHQL_WS_INIT_TIMEOUT_SECONDS", 10)
# The middleware of /graphql over ASGI (backend/asgi.py, issue 13): a bearer-token API needs no sessions,
# CSRF, auth or messages, and each of those costs two thread hops per request under ASGI.
GRAPHQL_MIDDLEWARE = [
    "apps.core.middleware.InlineSecurityMiddleware",
    "apps.core.middleware.RequestIdMiddleware",
    "apps.core.middleware.CorsMiddleware",
]
GRAPHQL_WS_MAX_SUBSCRIPTIONS = env_int("GRAPHQL_WS_MAX_SUBSCRIPTIONS", 50)
# A plain JSON twin of `me` at /bench/me for bench/http_me.py; never on outside a benchmark.
BENCH_ENDPOINTS = env_bool("BENCH_ENDPOINTS", False)

# --- Accounts ---------------------------------------------------------------------------------

ACCESS_TOKEN_TTL = timedelta(seconds=env_int("ACCESS_TOKEN_TTL_SECONDS", 15 * 60))
# Each process keeps the users of recent access tokens this long (and at most this many), trusted only while
# their auth version in the shared cache is unchanged (apps/accounts/auth_cache.py); 0 reads every time.
AUTH_USER_CACHE_SECONDS = env_int("AUTH_USER_CACHE_SECONDS", 60)
AUTH_USER_CACHE_SIZE = env_int("AUTH_USER_CACHE_SIZE", 10_000)
REFRESH_TOKEN_TTL = timedelta(days=env_int("REFRESH_TOKEN_TTL_DAYS", 30))
LOGIN_MAX_FAILURES_PER_ACCOUNT = env_int("LOGIN_MAX_FAILURES_PER_ACCOUNT", 5)
LOGIN_MAX_ATTEMPTS_PER_IP = env_int("LOGIN_MAX_ATTEMPTS_PER_IP", 30)
LOGIN_THROTTLE_WINDOW_SECONDS = env_int("LOGIN_THROTTLE_WINDOW_SECONDS", 15 * 60)
WELCOME_CREDITS = env_int("WELCOME_CREDITS", 20)
SIGNUPS_MAX_PER_IP_PER_HOUR = env_int("SIGNUPS_MAX_PER_IP_PER_HOUR", 20)

# --- Purchases (apps/purchases): App Store and Google Play, verified on the server -----------------

# A store answering slower than this is STORE_UNAVAILABLE (retryable; nothing is granted or lost).
STORE_HTTP_TIMEOUT_SECONDS = env_int("STORE_HTTP_TIMEOUT_SECONDS", 10)
# App Store: signed transactions and Server Notifications V2 are verified with Apple's
# app-store-server-library against these root certificates (DER or PEM files, comma-separated paths; Apple
# Root CA - G3 from https://www.apple.com/certificateauthority/). Empty: the App Store is off.
APPLE_BUNDLE_ID = os.environ.get("APPLE_BUNDLE_ID", "")
APPLE_APP_APPLE_ID = env_int("APPLE_APP_APPLE_ID", 0) or None  # required for production notifications
APPLE_ROOT_CERTIFICATES = env_list("APPLE_ROOT_CERTIFICATES")
# OCSP revocation checks of the signing chain (needs Apple's OCSP responders; off only in tests).
APPLE_ONLINE_CHECKS = env_bool("APPLE_ONLINE_CHECKS", True)
# Sandbox (TestFlight, App Review) purchases grant only when this is on; production keeps it off except
# for the App Review build window.
APPLE_ALLOW_SANDBOX = env_bool("APPLE_ALLOW_SANDBOX", not IS_PRODUCTION)
# The App Store Server API (restorePurchases re-reads history): an in-app purchase key from App Store
# Connect. Optional: without it, restore re-reads what the notifications and the app already sent.
APPLE_API_KEY_ID = os.environ.get("APPLE_API_KEY_ID", "")
APPLE_API_ISSUER_ID = os.environ.get("APPLE_API_ISSUER_ID", "")
APPLE_API_PRIVATE_KEY = os.environ.get("APPLE_API_PRIVATE_KEY", "")  # path to the .p8 file
# Google Play: the Android Publisher API with a service account (google-auth). Empty: Google Play is off.
GOOGLE_PLAY_PACKAGE_NAME = os.environ.get("GOOGLE_PLAY_PACKAGE_NAME", "")
GOOGLE_PLAY_CREDENTIALS = os.environ.get("GOOGLE_PLAY_CREDENTIALS", "")  # path to a service-account JSON
GOOGLE_PLAY_ALLOW_TEST_PURCHASES = env_bool("GOOGLE_PLAY_ALLOW_TEST_PURCHASES", not IS_PRODUCTION)
# Real-time Developer Notifications arrive by Pub/Sub push with an OIDC token: its audience (set on the
# push subscription) and the service account Pub/Sub signs as.
GOOGLE_PLAY_PUSH_AUDIENCE = os.environ.get("GOOGLE_PLAY_PUSH_AUDIENCE", "")
GOOGLE_PLAY_PUSH_SERVICE_ACCOUNT = os.environ.get("GOOGLE_PLAY_PUSH_SERVICE_ACCOUNT", "")
# The embedded mode's local test store (apps/purchases/stores/local.py): receipts `local-test:<product>:
# <anything>` that anyone can write. Development only; production refuses to start with it on.
PURCHASES_LOCAL_TEST_STORE = env_bool("PURCHASES_LOCAL_TEST_STORE", not IS_PRODUCTION)
# verifyPurchase / restorePurchases calls one user may make per window (each may call a store).
PURCHASES_MAX_CALLS_PER_WINDOW = env_int("PURCHASES_MAX_CALLS_PER_WINDOW", 60)
PURCHASES_CALLS_WINDOW_SECONDS = env_int("PURCHASES_CALLS_WINDOW_SECONDS", 600)
# The scheduler re-sends Google Play acknowledgements still due this often (Play refunds after 3 days).
PURCHASES_ACKNOWLEDGE_SWEEP_INTERVAL_SECONDS = env_int("PURCHASES_ACKNOWLEDGE_SWEEP_INTERVAL_SECONDS", 3600)

# --- Trends and the home screen ---------------------------------------------------------------


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


TRENDS_DEFAULT_LOCALE = os.environ.get("TRENDS_DEFAULT_LOCALE", "en")
# Trend media in the local folder are served here (apps/trends/media.py; S3 gives its own URLs).
TRENDS_MEDIA_URL = "/media/trends/"
TRENDS_SCREEN_CACHE_SECONDS = env_int("TRENDS_SCREEN_CACHE_SECONDS", 300)
# A trend's sound (apps/trends/sound.py): the longest and largest upload an admin may give, and the
# loudness it is stored at (integrated LUFS, true-peak ceiling in dBTP).
TRENDS_SOUND_MAX_SECONDS = env_int("TRENDS_SOUND_MAX_SECONDS", 60)
TRENDS_SOUND_MAX_BYTES = env_int("TRENDS_SOUND_MAX_BYTES", 10 * 1024 * 1024)
TRENDS_SOUND_TARGET_LUFS = env_float("TRENDS_SOUND_TARGET_LUFS", -14.0)
TRENDS_SOUND_TRUE_PEAK_DBTP = env_float("TRENDS_SOUND_TRUE_PEAK_DBTP", -1.0)
TRENDS_NEW_TODAY_HOURS = env_int("TRENDS_NEW_TODAY_HOURS", 24)
TRENDS_IMPRESSIONS_MAX_BATCH = env_int("TRENDS_IMPRESSIONS_MAX_BATCH", 100)
# Rotation: a scheduler enqueues the job every interval, in both run modes (apps/trends/scheduler.py).
TRENDS_SCHEDULER_ENABLED = env_bool("TRENDS_SCHEDULER_ENABLED", True)
TRENDS_ROTATION_INTERVAL_SECONDS = env_int("TRENDS_ROTATION_INTERVAL_SECONDS", 300)
# The same scheduler runs the Soul ID retention purge and the generation reaper sweep (0 turns one off).
CHARACTERS_PURGE_INTERVAL_SECONDS = env_int("CHARACTERS_PURGE_INTERVAL_SECONDS", 24 * 3600)
GENERATIONS_REAP_INTERVAL_SECONDS = env_int("GENERATIONS_REAP_INTERVAL_SECONDS", 600)
# Retention of generations (apps/generations/retention.py), purged daily: a selfie this many days after its
# last use; a video this many days after it finished (0: kept until the user deletes it).
GENERATIONS_PURGE_INTERVAL_SECONDS = env_int("GENERATIONS_PURGE_INTERVAL_SECONDS", 24 * 3600)
GENERATIONS_INPUT_RETENTION_DAYS = env_int("GENERATIONS_INPUT_RETENTION_DAYS", 30)
GENERATIONS_OUTPUT_RETENTION_DAYS = env_int("GENERATIONS_OUTPUT_RETENTION_DAYS", 0)
TRENDS_ROTATION_RUNS_KEEP_DAYS = env_int("TRENDS_ROTATION_RUNS_KEEP_DAYS", 14)
# Score: decayed (generations + share weight x shares + prior) per decayed impression (trends/rotation.py).
TRENDS_SCORE_HALF_LIFE_HOURS = env_float("TRENDS_SCORE_HALF_LIFE_HOURS", 24.0)
TRENDS_SCORE_WINDOW_HOURS = env_int("TRENDS_SCORE_WINDOW_HOURS", 7 * 24)
TRENDS_SCORE_SHARE_WEIGHT = env_float("TRENDS_SCORE_SHARE_WEIGHT", 2.0)
TRENDS_SCORE_PRIOR_IMPRESSIONS = env_float("TRENDS_SCORE_PRIOR_IMPRESSIONS", 200.0)
TRENDS_SCORE_PRIOR_RATE = env_float("TRENDS_SCORE_PRIOR_RATE", 0.05)
# Retire an unpinned live trend whose score stays under the threshold this long (after a grace period,
# and only with enough decayed impressions to be sure).
TRENDS_RETIRE_SCORE_THRESHOLD = env_float("TRENDS_RETIRE_SCORE_THRESHOLD", 0.01)
TRENDS_RETIRE_AFTER_HOURS = env_int("TRENDS_RETIRE_AFTER_HOURS", 48)
TRENDS_RETIRE_MIN_AGE_HOURS = env_int("TRENDS_RETIRE_MIN_AGE_HOURS", 72)
TRENDS_RETIRE_MIN_IMPRESSIONS = env_float("TRENDS_RETIRE_MIN_IMPRESSIONS", 500.0)

# --- Metrics and logs (apps/core/metrics.py, backend/metrics.py, gpu_worker/contract.py) ----------

# `/metrics` on the server; production requires METRICS_TOKEN (a bearer token, 32+ characters) with it.
METRICS_ENDPOINT = env_bool("METRICS_ENDPOINT", True)
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
# A backend worker process serves its metrics on this port (0: off). Several worker processes on one
# host share PROMETHEUS_MULTIPROC_DIR and one of them serves them all.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0)
# json: one JSON object per line with the log context (request id, user, operation, job id); text: plain.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "json" if IS_PRODUCTION else "text").strip().lower()
if LOG_FORMAT not in ("json", "text"):
    raise ValueError(f"LOG_FORMAT must be json or text, got {LOG_FORMAT!r}")

# --- Logging ----------------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "gpu_worker.contract.JsonLogFormatter"},
    },
    "filters": {"log_context": {"()": "gpu_worker.contract.LogContextFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["log_context"]}
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Strawberry logs every masked error itself; ours carry the request id (graphql_schema/errors.py).
        "strawberry.execution": {"level": "CRITICAL"},
    },
}
