"""Push senders: the console sender of the embedded mode and FCM through firebase-admin.

A sender takes one message and the device's current token and says what happened as a `SendOutcome`;
it never raises for a delivery problem. What an outcome means for the row and the device is decided in
`delivery.push_message_deliver`:

- accepted (FCM returns the message name): SENT, with that name as the provider message id.
- `UnregisteredError`, `SenderIdMismatchError`: DEAD, and the device row is deleted.
- `QuotaExceededError` (429), `UnavailableError` (503), `InternalError` (500), timeouts and connection
  errors: RETRY; Dramatiq retries with exponential backoff, never sooner than Retry-After; FAILED at the cap.
- `ThirdPartyAuthError` (the APNs credential), `InvalidArgumentError`, any other Firebase or credential
  error: FAILED at once, logged as an error; the token is kept.

firebase-admin's own HTTP adapter already retries 500 and 503 (four times, with backoff) inside one
`send`, so an UNAVAILABLE that reaches us has outlasted those.
"""

from __future__ import annotations

import email.utils
import enum
import logging
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from firebase_admin import exceptions, messaging
from google.auth import exceptions as auth_exceptions

from apps.accounts.firebase import firebase_app

if TYPE_CHECKING:
    from .models import PushMessage

logger = logging.getLogger(__name__)

# Android notification channels the app creates (ids), and the iOS thread per kind group.
ANDROID_CHANNELS = {"GENERATION": "generations", "CHARACTER": "soul_id"}
IOS_THREADS = {"GENERATION": "generations", "CHARACTER": "soul-id"}
# A Retry-After beyond this is not believed (a day).
MAX_RETRY_AFTER_SECONDS = 24 * 3600


class Result(enum.StrEnum):
    SENT = "SENT"
    RETRY = "RETRY"
    DEAD = "DEAD"
    FAILED = "FAILED"


@dataclass(frozen=True)
class SendOutcome:
    result: Result
    provider_message_id: str = ""
    error: str = ""
    retry_after_seconds: float | None = None  # what the provider asked for, when it did


class PushSender(Protocol):
    name: str

    def send(self, *, push: PushMessage, token: str) -> SendOutcome: ...


def _group(kind: str) -> str:
    return kind.split("_", 1)[0]  # GENERATION_SUCCEEDED -> GENERATION, CHARACTER_READY -> CHARACTER


class ConsoleSender:
    """The embedded mode's sender: logs the message (never the token) and reports it sent."""

    name = "console"

    def send(self, *, push: PushMessage, token: str) -> SendOutcome:
        logger.info(
            "push %s %s to %s device %s [%s]: %s | %s | data=%s",
            push.id,
            push.kind,
            push.platform,
            push.device_id,
            push.locale,
            push.title,
            push.body,
            push.data,
        )
        return SendOutcome(Result.SENT, provider_message_id=f"console:{push.id}")


def _retry_after_seconds(exc: Exception) -> float | None:
    """The Retry-After of the HTTP response behind a firebase-admin error, in seconds (delta or date)."""
    response = getattr(exc, "http_response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


class FcmSender:
    """FCM HTTP v1 through firebase-admin, on the process's one Firebase app (apps.accounts.firebase)."""

    name = "fcm"

    @staticmethod
    def build_message(*, push: PushMessage, token: str):
        group = _group(push.kind)
        with warnings.catch_warnings():
            # firebase-admin 7.7 deprecates `token` for `fid` (Firebase installation ids); devices register
            # FCM registration tokens, which FCM still accepts.
            warnings.simplefilter("ignore", DeprecationWarning)
            return messaging.Message(
                token=token,
                notification=messaging.Notification(title=push.title, body=push.body),
                data={key: str(value) for key, value in push.data.items()},
                android=messaging.AndroidConfig(
                    priority="high",
                    collapse_key=push.collapse_key,
                    notification=messaging.AndroidNotification(
                        channel_id=ANDROID_CHANNELS[group], tag=push.collapse_key
                    ),
                ),
                apns=messaging.APNSConfig(
                    headers={"apns-collapse-id": push.collapse_key, "apns-priority": "10"},
                    payload=messaging.APNSPayload(
                        aps=messaging.Aps(mutable_content=True, sound="default", thread_id=IOS_THREADS[group])
                    ),
                ),
            )

    def send(self, *, push: PushMessage, token: str) -> SendOutcome:
        try:
            if not settings.FIREBASE_CREDENTIALS:
                raise ImproperlyConfigured(
                    "PUSH_BACKEND=fcm needs FIREBASE_CREDENTIALS (a service-account JSON)."
                )
            message_name = messaging.send(self.build_message(push=push, token=token), app=firebase_app())
        except (messaging.UnregisteredError, messaging.SenderIdMismatchError) as exc:
            return SendOutcome(Result.DEAD, error=_describe(exc))
        except (
            messaging.QuotaExceededError,
            exceptions.UnavailableError,
            exceptions.InternalError,
            exceptions.DeadlineExceededError,
            exceptions.UnknownError,  # a transport failure without a response
        ) as exc:
            return SendOutcome(
                Result.RETRY, error=_describe(exc), retry_after_seconds=_retry_after_seconds(exc)
            )
        except messaging.ThirdPartyAuthError as exc:
            logger.error(
                "FCM refused push %s: the APNs/web-push credential of the Firebase project is rejected (%s). "
                "Fix the APNs key in the Firebase console; device tokens are kept.",
                push.id,
                _describe(exc),
            )
            return SendOutcome(Result.FAILED, error=_describe(exc))
        except exceptions.FirebaseError as exc:  # INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED...
            logger.error("FCM refused push %s: %s; not retried, token kept", push.id, _describe(exc))
            return SendOutcome(Result.FAILED, error=_describe(exc))
        except auth_exceptions.GoogleAuthError as exc:  # the OAuth token for FCM could not be had
            if getattr(exc, "retryable", False) or isinstance(exc, auth_exceptions.TransportError):
                return SendOutcome(Result.RETRY, error=f"{type(exc).__name__}: {exc}"[:500])
            logger.error("FCM credentials refused for push %s: %s", push.id, exc)
            return SendOutcome(Result.FAILED, error=f"{type(exc).__name__}: {exc}"[:500])
        except ImproperlyConfigured as exc:
            logger.error("push %s not sent: %s", push.id, exc)
            return SendOutcome(Result.FAILED, error=str(exc)[:500])
        return SendOutcome(Result.SENT, provider_message_id=message_name)


def _describe(exc: Exception) -> str:
    code = getattr(exc, "code", "")
    status = getattr(getattr(exc, "http_response", None), "status_code", "")
    return f"{type(exc).__name__} ({code}, HTTP {status}): {exc}"[:500]


_SENDERS: dict[str, type] = {"console": ConsoleSender, "fcm": FcmSender}


def get_sender() -> PushSender:
    """The sender PUSH_BACKEND names (`console` or `fcm`)."""
    backend = (settings.PUSH_BACKEND or "").strip().lower()
    try:
        return _SENDERS[backend]()
    except KeyError:
        raise ImproperlyConfigured(f"PUSH_BACKEND={backend!r}: expected 'console' or 'fcm'") from None
