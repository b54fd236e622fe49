"""Small HTTP middleware: a request id on every request, CORS for the configured origins, Django's
security middleware without thread hops, and the staff member's time zone on admin pages."""

from __future__ import annotations

import contextlib
import re
import uuid
import zoneinfo

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.middleware.security import SecurityMiddleware
from django.utils import timezone

from gpu_worker.contract import log_context_bind, log_context_reset

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class _Middleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        early = self.before(request)
        if self.is_async:
            return self._acall(request, early)
        response = early if early is not None else self.get_response(request)
        return self.after(request, response)

    async def _acall(self, request: HttpRequest, early: HttpResponse | None):
        response = early if early is not None else await self.get_response(request)
        return self.after(request, response)

    def before(self, request: HttpRequest) -> HttpResponse | None:
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        return response


class RequestIdMiddleware(_Middleware):
    """Takes a well-formed `X-Request-ID` from the caller or makes one; logs and responses carry it."""

    def before(self, request: HttpRequest) -> None:
        given = request.headers.get("X-Request-ID", "")
        request.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        # Every log record of this request, and every job it sends, carries the id (gpu_worker/contract.py).
        request.log_context_token = log_context_bind(request_id=request.request_id)
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        response["X-Request-ID"] = request.request_id
        # Unbound, so a thread that serves requests one after another (WSGI, tests) carries none over.
        with contextlib.suppress(AttributeError, ValueError):
            log_context_reset(request.log_context_token)
        return response


class CorsMiddleware(_Middleware):
    """CORS for `CORS_ALLOWED_ORIGINS` only (browser clients). Mobile apps send no Origin."""

    def _allowed(self, request: HttpRequest) -> str | None:
        origin = request.headers.get("Origin")
        return origin if origin and origin in settings.CORS_ALLOWED_ORIGINS else None

    def before(self, request: HttpRequest) -> HttpResponse | None:
        if (
            request.method == "OPTIONS"
            and self._allowed(request)
            and "Access-Control-Request-Method" in request.headers
        ):
            response = HttpResponse(status=204)
            response["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response["Access-Control-Allow-Headers"] = "Authorization, Content-Type, X-Request-ID"
            response["Access-Control-Max-Age"] = "600"
            return response
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        origin = self._allowed(request)
        if origin:
            response["Access-Control-Allow-Origin"] = origin
            response["Vary"] = "Origin"
        return response


TIME_ZONE_COOKIE = "staff_tz"


class StaffTimeZoneMiddleware(_Middleware):
    """Admin pages show dates in the staff member's own time zone.

    Admin's base template (backend/templates/admin/base_site.html) stores the browser's IANA zone
    (`Intl.DateTimeFormat().resolvedOptions().timeZone`) in the `staff_tz` cookie; this activates it for
    admin requests, so a curator in Berlin and one in Tokyo each read local times with no profile to keep
    up to date when they travel. An unknown zone falls back to UTC (TIME_ZONE). The API never uses it.
    """

    def before(self, request: HttpRequest) -> None:
        zone = None
        name = request.COOKIES.get(TIME_ZONE_COOKIE, "")
        if request.path.startswith("/admin/") and name and len(name) <= 64:
            try:
                zone = zoneinfo.ZoneInfo(name)
            except (ValueError, zoneinfo.ZoneInfoNotFoundError):
                zone = None
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        timezone.deactivate()
        return response


class InlineSecurityMiddleware(SecurityMiddleware):
    """Django's SecurityMiddleware with its hooks run on the event loop. Under ASGI, Django runs a
    MiddlewareMixin's `process_request` and `process_response` each in the sync thread (two hops per
    request); these two only read settings and set headers, so they run inline."""

    async def __acall__(self, request: HttpRequest):
        response = self.process_request(request)  # the HTTPS redirect, or None
        response = response or await self.get_response(request)
        return self.process_response(request, response)
