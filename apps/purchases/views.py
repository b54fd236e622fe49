"""The stores' server-notification endpoints.

Each answers 2xx once a notification is handled, replayed or deliberately ignored, 4xx when it is not the
store's (nothing changes, and the store does not redeliver a 4xx it did not send), and 503 when the store
should deliver it again (a store API we needed did not answer). Apple redelivers non-2xx answers for days;
Pub/Sub push redelivers until its retention ends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from apps.core.errors import StoreUnavailable

from .services import local_product_type, notification_receive
from .stores import NotificationRejected, StoreNotice, local

logger = logging.getLogger(__name__)


def _handle(request: HttpRequest, parse: Callable[[HttpRequest], StoreNotice], store: str) -> JsonResponse:
    try:
        notice = parse(request)
        outcome = notification_receive(notice)
    except NotificationRejected as exc:
        logger.warning("%s notification rejected: %s", store, exc.reason)
        return JsonResponse({"error": exc.reason}, status=exc.status)
    except StoreUnavailable as exc:
        logger.warning("%s notification deferred (the store will redeliver): %s", store, exc.message)
        return JsonResponse({"error": "try again later"}, status=503, headers={"Retry-After": "60"})
    return JsonResponse({"outcome": outcome})


def _apple(request: HttpRequest) -> StoreNotice:
    from .stores import apple

    if not apple.is_configured():
        raise NotificationRejected("App Store notifications are not configured here.", status=404)
    try:
        signed_payload = json.loads(request.body)["signedPayload"]
    except (ValueError, KeyError, TypeError):
        raise NotificationRejected('The body is JSON {"signedPayload": "<JWS>"}.') from None
    if not isinstance(signed_payload, str):
        raise NotificationRejected("signedPayload is a string.")
    return apple.verify_notification(signed_payload)


def _google(request: HttpRequest) -> StoreNotice:
    from .stores import google

    if not google.is_configured():
        raise NotificationRejected("Google Play notifications are not configured here.", status=404)
    google.authenticate_push(request.headers.get("Authorization"))  # before reading anything else
    return google.parse_push(request.body)


def _local(request: HttpRequest) -> StoreNotice:
    return local.parse_notification(request.body, product_type_of=local_product_type)


@csrf_exempt
@require_POST
def app_store_notification(request: HttpRequest) -> JsonResponse:
    return _handle(request, _apple, "App Store")


@csrf_exempt
@require_POST
def google_play_notification(request: HttpRequest) -> JsonResponse:
    return _handle(request, _google, "Google Play")


@csrf_exempt
@require_POST
def local_test_store_notification(request: HttpRequest) -> JsonResponse:
    if not local.is_enabled():
        raise Http404()
    return _handle(request, _local, "Local test store")
