"""The /v1 NinjaAPI: its routers, its OpenAPI 3.1 document (/v1/openapi.json, committed as
rest_api/openapi.json and compared by a test), and every error as problem details."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from django.http import Http404, HttpRequest, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, AuthorizationError, HttpError, ValidationError

from apps.core.errors import DomainError, ErrorCode

from . import generations, uploads
from .problems import domain_error_response, problem, problem_response, validation_error_response

logger = logging.getLogger(__name__)

OPENAPI_PATH = Path(__file__).with_name("openapi.json")

api = NinjaAPI(
    title="Diffuse business API",
    version="1",
    description="Generations from an organization's pipelines: API keys, batches, signed webhooks. Errors "
    "are RFC 9457 problem details whose `code` is the GraphQL API's ErrorCode.",
    urls_namespace="v1",
    docs_url=None,
)
api.add_router("", generations.router)
api.add_router("", uploads.router)


@api.exception_handler(DomainError)
def _domain_error(request: HttpRequest, exc: DomainError) -> JsonResponse:
    return domain_error_response(request, exc)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> JsonResponse:
    return validation_error_response(request, list(exc.errors))


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> JsonResponse:
    body = problem(
        ErrorCode.UNAUTHENTICATED.value,
        status=401,
        detail="Send an API key: `Authorization: Bearer dfk_live_...`.",
    )
    return problem_response(body, headers={"WWW-Authenticate": 'Bearer realm="v1"'})


@api.exception_handler(AuthorizationError)
def _forbidden(request: HttpRequest, exc: AuthorizationError) -> JsonResponse:
    return problem_response(
        problem(ErrorCode.FORBIDDEN.value, status=403, detail="This key may not do this.")
    )


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> JsonResponse:
    return problem_response(problem(ErrorCode.NOT_FOUND.value, status=404, detail="Not found."))


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> JsonResponse:
    code = ErrorCode.VALIDATION.value if exc.status_code < 500 else "INTERNAL"
    return problem_response(problem(code, status=exc.status_code, detail=str(exc.message)))


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception) -> JsonResponse:
    logger.exception("unexpected error in %s %s", request.method, request.path)
    return problem_response(problem("INTERNAL", status=500, detail="Something went wrong on our side."))


def openapi_document() -> str:
    """The OpenAPI document as committed (`make openapi` writes it)."""
    return json.dumps(api.get_openapi_schema(path_prefix="/v1"), indent=2, sort_keys=True) + "\n"
