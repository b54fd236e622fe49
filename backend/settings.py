"""Settings, read from the environment.

Every integration has an embedded default so that `make run` and the tests need no services
(SQLite, an in-process Dramatiq broker, an in-memory channel layer, a local media folder and a
console push sender). Setting `DATABASE_URL`, `REDIS_URL`, `STORAGE_BACKEND=s3` and the Firebase
variables switches each part to the production service. `APP_ENV=production` turns on the safety
checks in `backend/checks.py`, which refuse to start with an unsafe setting.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url

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
    "django.contrib.staticfiles",
    "channels",
    "strawberry_django",
    "apps.accounts",
    "apps.credits",
    "apps.storage",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "apps.core.middleware.RequestIdMiddleware",
    "apps.core.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
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
        "DIRS": [],
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
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

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
    else {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "db.sqlite3", "OPTIONS": {"timeout": 20}}
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Persistent connections in an ASGI server leak across threads; keep them per request.
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 0)

# --- Redis: broker, channel layer and cache ---------------------------------------------------

REDIS_URL = os.environ.get("REDIS_URL", "")
# "stub": the in-process broker with worker threads inside the server; "redis": separate workers.
DRAMATIQ_BROKER = "redis" if REDIS_URL else "stub"
# In the embedded mode the ASGI server runs the Django queues itself; EMBEDDED_WORKER=0 turns it off.
EMBEDDED_WORKER = env_bool("EMBEDDED_WORKER", DRAMATIQ_BROKER == "stub")
DRAMATIQ_WORKER_THREADS = env_int("DRAMATIQ_WORKER_THREADS", 4)

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": 1000, "expiry": 30},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

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
UPLOAD_MAX_PIXELS = env_int("UPLOAD_MAX_PIXELS", 40_000_000)
UPLOADS_PER_REQUEST_MAX = env_int("UPLOADS_PER_REQUEST_MAX", 20)

# --- Push and Firebase ------------------------------------------------------------------------

FIREBASE_CREDENTIALS = os.environ.get("FIREBASE_CREDENTIALS", "")  # path to a service-account JSON
FIREBASE_PROJECT_ID = os.environ.get("FIREBASE_PROJECT_ID", "")
PUSH_BACKEND = os.environ.get("PUSH_BACKEND", "fcm" if FIREBASE_CREDENTIALS else "console")

# --- GPU models -------------------------------------------------------------------------------

MODEL_ROOT = Path(os.environ.get("MODEL_ROOT", VAR_DIR / "models"))

# --- GraphQL ----------------------------------------------------------------------------------

GRAPHQL_INTROSPECTION = env_bool("GRAPHQL_INTROSPECTION", not IS_PRODUCTION)
GRAPHQL_IDE = env_bool("GRAPHQL_IDE", not IS_PRODUCTION)
GRAPHQL_MAX_DEPTH = env_int("GRAPHQL_MAX_DEPTH", 12)
GRAPHQL_MAX_ALIASES = env_int("GRAPHQL_MAX_ALIASES", 15)
GRAPHQL_MAX_TOKENS = env_int("GRAPHQL_MAX_TOKENS", 2000)
GRAPHQL_WS_INIT_TIMEOUT_SECONDS = env_int("GRAPHQL_WS_INIT_TIMEOUT_SECONDS", 10)
GRAPHQL_WS_MAX_SUBSCRIPTIONS = env_int("GRAPHQL_WS_MAX_SUBSCRIPTIONS", 50)

# --- Accounts ---------------------------------------------------------------------------------

ACCESS_TOKEN_TTL = timedelta(seconds=env_int("ACCESS_TOKEN_TTL_SECONDS", 15 * 60))
REFRESH_TOKEN_TTL = timedelta(days=env_int("REFRESH_TOKEN_TTL_DAYS", 30))
LOGIN_MAX_FAILURES_PER_ACCOUNT = env_int("LOGIN_MAX_FAILURES_PER_ACCOUNT", 5)
LOGIN_MAX_ATTEMPTS_PER_IP = env_int("LOGIN_MAX_ATTEMPTS_PER_IP", 30)
LOGIN_THROTTLE_WINDOW_SECONDS = env_int("LOGIN_THROTTLE_WINDOW_SECONDS", 15 * 60)
WELCOME_CREDITS = env_int("WELCOME_CREDITS", 20)

# --- Logging ----------------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Strawberry logs every masked error itself; ours carry the request id (graphql_schema/errors.py).
        "strawberry.execution": {"level": "CRITICAL"},
    },
}
