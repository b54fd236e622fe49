"""The backend's Firebase Admin app, and Firebase ID-token verification.

One firebase-admin app, created lazily from settings on first use and shared by everything that talks to
Firebase (sign-in here, push later), so Google's public certificates are fetched once and then served
from the app's HTTP cache for as long as Google's Cache-Control allows:

- `FIREBASE_CREDENTIALS` (path to a service-account JSON): a `credentials.Certificate`; the project id is
  `FIREBASE_PROJECT_ID` when set, else the JSON's.
- otherwise `FIREBASE_PROJECT_ID` alone, with anonymous credentials: verifying ID tokens needs nothing
  else, and firebase-admin does not go looking for Application Default Credentials (a metadata-server
  probe that fails off Google Cloud).
- neither: `ImproperlyConfigured`, a server error that says what to set.

The Auth emulator (`FIREBASE_AUTH_EMULATOR_HOST`, which makes firebase-admin accept unsigned tokens) is
refused in production by apps/core/checks.py.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import firebase_admin
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from firebase_admin import auth, credentials
from google.auth.credentials import AnonymousCredentials

from apps.core.errors import TokenInvalid, UnsupportedOption

logger = logging.getLogger(__name__)

APP_NAME = "diffuse-backend"
# Real ID tokens are about 1 KB; anything far longer is refused before it is decoded.
ID_TOKEN_MAX_LENGTH = 16_384

_app: firebase_admin.App | None = None
_lock = threading.Lock()


def firebase_app() -> firebase_admin.App:
    """The one Firebase app of this process, initialised from settings on first use."""
    global _app
    with _lock:
        if _app is None:
            _app = _initialize()
        return _app


def firebase_app_reset() -> None:
    """Drops the app (and its certificate cache); the next use initialises it again from settings."""
    global _app
    with _lock:
        if _app is not None:
            firebase_admin.delete_app(_app)
            _app = None


@receiver(setting_changed)
def _reset_when_firebase_settings_change(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("FIREBASE_"):
        firebase_app_reset()


def _initialize() -> firebase_admin.App:
    options: dict[str, Any] = {"httpTimeout": settings.FIREBASE_HTTP_TIMEOUT_SECONDS}
    if settings.FIREBASE_PROJECT_ID:
        options["projectId"] = settings.FIREBASE_PROJECT_ID
    if settings.FIREBASE_CREDENTIALS:
        try:
            credential: Any = credentials.Certificate(settings.FIREBASE_CREDENTIALS)
        except (OSError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"FIREBASE_CREDENTIALS={settings.FIREBASE_CREDENTIALS!r} is not a readable "
                f"service-account JSON: {exc}"
            ) from exc
    elif settings.FIREBASE_PROJECT_ID:
        credential = AnonymousCredentials()
    else:
        raise ImproperlyConfigured(
            "Firebase is not configured: set FIREBASE_PROJECT_ID (enough for sign-in) or "
            "FIREBASE_CREDENTIALS (the path to a service-account JSON)."
        )
    app = firebase_admin.initialize_app(credential, options, name=APP_NAME)
    if not app.project_id:
        firebase_admin.delete_app(app)
        raise ImproperlyConfigured(
            "The service-account JSON in FIREBASE_CREDENTIALS has no project_id: set FIREBASE_PROJECT_ID."
        )
    return app


def verify_id_token(id_token: str) -> dict[str, Any]:
    """The claims of a Firebase ID token of our project, checked with firebase-admin (signature against
    Google's published certificates, kid, RS256, audience, issuer, subject, iat, exp).

    Anything that is not such a token (garbage, expired, another project's, badly signed, unknown kid) is
    `TokenInvalid`. Failing to fetch Google's certificates is not the token's fault: that error
    (`firebase_admin.auth.CertificateFetchError`) propagates as a server error.
    """
    if not settings.FIREBASE_PROJECT_ID and not settings.FIREBASE_CREDENTIALS:
        # The embedded mode and servers without Firebase: the client's choice, not a server error.
        raise UnsupportedOption(
            "Sign-in with Firebase is not set up on this server. Sign in with email and password.",
            field="idToken",
        )
    if not id_token or not id_token.strip() or len(id_token) > ID_TOKEN_MAX_LENGTH:
        raise TokenInvalid()
    app = firebase_app()
    try:
        return auth.verify_id_token(
            id_token.strip(), app=app, clock_skew_seconds=settings.FIREBASE_CLOCK_SKEW_SECONDS
        )
    except auth.InvalidIdTokenError as exc:  # ExpiredIdTokenError is one too
        # The reason, not the token: the message may quote the token, so it is cut short.
        logger.info("refused a Firebase ID token: %s: %.160s", type(exc).__name__, exc)
        raise TokenInvalid() from None
