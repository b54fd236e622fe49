"""Production safety checks.

Registered as deployment checks, so `manage.py check --deploy` fails on any of them, and run again by
the ASGI application at start-up when `APP_ENV=production`, so an unsafe production server does not start.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from django.conf import settings
from django.core.checks import Error, Tags, register


def production_errors() -> list[Error]:
    errors: list[Error] = []

    def fail(id_: str, msg: str, hint: str) -> None:
        errors.append(Error(msg, hint=hint, id=f"backend.{id_}"))

    if settings.DEBUG:
        fail("E001", "DEBUG is on in production.", "Unset DEBUG or set DEBUG=0.")
    if settings.SECRET_KEY == settings.DEFAULT_SECRET_KEY or len(settings.SECRET_KEY) < 50:
        fail(
            "E002",
            "SECRET_KEY is the public default or too short.",
            "Set SECRET_KEY to 50+ random characters.",
        )
    if settings.GRAPHQL_IDE:
        fail("E003", "GraphiQL is on in production.", "Unset GRAPHQL_IDE or set GRAPHQL_IDE=0.")
    if settings.GRAPHQL_INTROSPECTION:
        fail(
            "E004",
            "GraphQL introspection is on in production.",
            "Unset GRAPHQL_INTROSPECTION or set it to 0.",
        )
    for name in ("FIREBASE_AUTH_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"):
        if os.environ.get(name):
            fail("E005", f"{name} is set: Firebase would trust unsigned tokens.", f"Unset {name}.")
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        fail("E006", "The database is SQLite in production.", "Set DATABASE_URL to PostgreSQL.")
    if settings.DRAMATIQ_BROKER != "redis":
        fail("E007", "The in-process Dramatiq broker is used in production.", "Set REDIS_URL.")
    if not settings.ALLOWED_HOSTS or "*" in settings.ALLOWED_HOSTS:
        fail("E008", "ALLOWED_HOSTS is empty or a wildcard.", "Set ALLOWED_HOSTS to the API's host names.")
    if settings.STORAGE_BACKEND != "s3":
        fail(
            "E009",
            "Media is stored in a local folder in production.",
            "Set STORAGE_BACKEND=s3 and S3_BUCKET.",
        )
    if settings.PUSH_BACKEND != "fcm" or not settings.FIREBASE_CREDENTIALS:
        fail(
            "E011",
            "Push notifications are not sent through FCM with credentials.",
            "Set FIREBASE_CREDENTIALS to the service-account JSON (PUSH_BACKEND defaults to fcm then).",
        )
    if settings.PURCHASES_LOCAL_TEST_STORE:
        fail(
            "E012",
            "The local test store is on in production: anyone could write a receipt for free credits.",
            "Unset PURCHASES_LOCAL_TEST_STORE.",
        )
    if settings.APPLE_BUNDLE_ID and settings.APPLE_ROOT_CERTIFICATES and not settings.APPLE_APP_APPLE_ID:
        fail(
            "E013",
            "APPLE_APP_APPLE_ID is missing: production App Store notifications cannot be verified.",
            "Set APPLE_APP_APPLE_ID to the app's Apple ID (App Store Connect > App Information).",
        )
    if settings.GOOGLE_PLAY_PACKAGE_NAME and not (
        settings.GOOGLE_PLAY_PUSH_AUDIENCE and settings.GOOGLE_PLAY_PUSH_SERVICE_ACCOUNT
    ):
        fail(
            "E014",
            "Google Play notifications would be taken without checking who sent them.",
            "Set GOOGLE_PLAY_PUSH_AUDIENCE and GOOGLE_PLAY_PUSH_SERVICE_ACCOUNT (the Pub/Sub push's OIDC).",
        )
    if not settings.C2PA_DISABLED and not (settings.C2PA_SIGN_CERT and settings.C2PA_SIGN_KEY):
        fail(
            "E015",
            "Videos would be delivered without a signed AI label (C2PA): no signing material.",
            "Set C2PA_SIGN_CERT (PEM chain) and C2PA_SIGN_KEY (PEM key) for the GPU workers, "
            "or C2PA_DISABLED=1 to deliver unlabelled videos on purpose.",
        )
    static_problem = static_files_problem()
    if static_problem:
        fail("E016", f"Static files would not be served: {static_problem}.", STATIC_HINT)
    if not settings.MODERATION_IMAGE_MODEL and not settings.MODERATION_IMAGES_DISABLED:
        fail(
            "E020",
            "No image classifier is configured: photos and videos would go unmoderated.",
            "Set MODERATION_IMAGE_MODEL to its folder under MODEL_ROOT (or MODERATION_IMAGES_DISABLED=1 "
            "if that is really meant).",
        )
    if settings.METRICS_ENDPOINT and len(settings.METRICS_TOKEN) < 32:
        fail(
            "E021",
            "/metrics is served without a bearer token of 32+ characters in production.",
            "Set METRICS_TOKEN (and give it to the scraper), or METRICS_ENDPOINT=0 to turn /metrics off.",
        )
    if settings.WEBHOOKS_ALLOW_LOOPBACK:
        fail(
            "E022",
            "WEBHOOKS_ALLOW_LOOPBACK is on: webhook endpoints could reach this host's own services.",
            "Unset WEBHOOKS_ALLOW_LOOPBACK.",
        )
    if settings.IMAGE_URL_ALLOW_LOOPBACK:
        fail(
            "E023",
            "IMAGE_URL_ALLOW_LOOPBACK is on: an image_url could make this host fetch its own services.",
            "Unset IMAGE_URL_ALLOW_LOOPBACK.",
        )
    if getattr(settings, "BENCH_ENDPOINTS", False):
        fail("E010", "BENCH_ENDPOINTS is on in production.", "Unset BENCH_ENDPOINTS.")
    return errors


STATIC_MIDDLEWARE = "backend.staticfiles.StaticFilesMiddleware"  # ServeStatic's, 404 in DEBUG too
STATIC_HINT = (
    f"Keep {STATIC_MIDDLEWARE} in MIDDLEWARE and run "
    "`manage.py collectstatic --noinput` (in the image build) before starting the server."
)
# A file every admin page loads: in the manifest means collectstatic ran with the hashed-names storage.
STATIC_PROBE = "admin/css/base.css"


def static_files_problem() -> str | None:
    """Why admin and GraphiQL would load unstyled (404s under /static/), or None when they will not."""
    if STATIC_MIDDLEWARE not in settings.MIDDLEWARE:
        return "ServeStatic's middleware is not installed"
    manifest = Path(settings.STATIC_ROOT) / "staticfiles.json"
    if not manifest.is_file():
        return f"collectstatic has not filled STATIC_ROOT ({settings.STATIC_ROOT})"
    try:
        paths = json.loads(manifest.read_text()).get("paths", {})
    except (OSError, ValueError):
        return f"{manifest} is unreadable"
    if STATIC_PROBE not in paths:
        return f"{STATIC_PROBE} is not in {manifest}"
    return None


@register(Tags.security, deploy=True)
def check_production_settings(app_configs=None, **kwargs) -> list[Error]:
    return production_errors()
