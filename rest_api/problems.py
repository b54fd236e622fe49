"""The only mapping from errors to HTTP for /v1: RFC 9457 problem details (`application/problem+json`)
with `code` = the GraphQL ErrorCode, and `field` = the request field to fix (snake_case, as in /v1)."""

from __future__ import annotations

import logging
import re
from typing import Any

from django.http import HttpRequest, JsonResponse
from ninja import Schema

from apps.core.errors import DomainError, ErrorCode, RateLimited

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/problem+json"

STATUS: dict[ErrorCode, int] = {
    ErrorCode.VALIDATION: 422,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.INSUFFICIENT_CREDITS: 402,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 422,
    ErrorCode.IDEMPOTENCY_IN_PROGRESS: 409,
    ErrorCode.CONSENT_REQUIRED: 403,
    ErrorCode.CHARACTER_NOT_READY: 409,
    ErrorCode.UNSUPPORTED_OPTION: 422,
    ErrorCode.UPLOAD_INVALID: 422,
}
TITLES: dict[int, str] = {
    400: "Bad request",
    401: "Unauthorized",
    402: "Payment required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
}
# GraphQL names some inputs differently.
SOURCES = ("body", "query", "path", "header", "payload", "cookie", "form", "file")
FIELD_NAMES = {"idempotencyKey": "Idempotency-Key", "id": "id"}


class Problem(Schema):
    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None


def rest_field(field: str | None) -> str | None:
    if field is None:
        return None
    if field in FIELD_NAMES:
        return FIELD_NAMES[field]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", field).lower()


def problem(code: str, *, status: int, detail: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": f"/v1/problems#{code.lower()}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        "field": field,
        **extra,
    }


def problem_from(exc: DomainError) -> dict[str, Any]:
    status = STATUS.get(exc.code, 400)
    # As on GraphQL's UploadInvalid: an upload's `reason` (NO_FACE, ...), for a program to act on.
    extra = {"reason": str(exc.extra["reason"])} if exc.extra.get("reason") else {}
    return problem(exc.code.value, status=status, detail=exc.message, field=rest_field(exc.field), **extra)


def problem_response(body: dict[str, Any], *, headers: dict[str, str] | None = None) -> JsonResponse:
    response = JsonResponse(body, status=body["status"], content_type=CONTENT_TYPE)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def domain_error_response(request: HttpRequest, exc: DomainError) -> JsonResponse:
    headers = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after_seconds)
    if exc.code == ErrorCode.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = 'Bearer realm="v1"'
    return problem_response(problem_from(exc), headers=headers)


def validation_problem(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """Request validation (pydantic's errors): 422 naming the first field (`loc` without `body`/...)."""
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in SOURCES]
    field = ".".join(loc) or None
    message = first.get("msg", "Some input is not valid.")
    detail = f"{field}: {message}" if field else message
    body = problem(ErrorCode.VALIDATION.value, status=422, detail=detail, field=field)
    body["errors"] = [
        {
            "field": ".".join(str(p) for p in e.get("loc", ()) if p not in SOURCES) or None,
            "detail": e.get("msg", ""),
        }
        for e in errors[:20]
    ]
    return body


def validation_error_response(request: HttpRequest, errors: list[dict[str, Any]]) -> JsonResponse:
    return problem_response(validation_problem(errors))
