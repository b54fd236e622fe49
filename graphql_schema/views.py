"""The HTTP endpoint: Strawberry's async Django view with bearer-token auth.

CSRF-exempt on purpose: the API authenticates with bearer tokens only, never session cookies, so a
cross-site request carries no credentials. Multipart uploads stay off (uploads go to storage directly).

Automatic persisted queries (Apollo's protocol): `extensions.persistedQuery = {version: 1, sha256Hash}`
without a query runs the document registered under that hash, or answers PERSISTED_QUERY_NOT_FOUND (200,
so the client resends it with the query); with a query it registers the document once sha256(query)
matches and the document has passed parsing, validation and the depth/token/alias limits. A GET answered
by hash carries Cache-Control and an ETag, and a matching If-None-Match is answered 304.

A request the transport refuses (a body that is not UTF-8, not JSON or not a JSON object, a content type
other than JSON, a batch, a bad method) is answered in GraphQL's error shape, `{"errors": [{"message",
"extensions": {"code"}}]}`, with its 4xx status, where Strawberry answers plain text: a client parses
one kind of error body whatever went wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time

import orjson
from cross_web import HTTPException
from django.conf import settings
from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse, HttpResponseNotModified, JsonResponse
from django.template.loader import render_to_string
from django.utils.cache import patch_vary_headers
from django.utils.http import parse_etags
from django.views.decorators.csrf import csrf_exempt
from strawberry.django.views import AsyncGraphQLView
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult

from apps.core.cache_async import cache_get

from .context import Context, context_auth
from .observability import operation_record
from .response_cache import home_screen_only, operation_name_of, response_cache_lookup, response_cache_store
from .schema import schema

APQ_CACHE_PREFIX = "graphql:apq:v1:"
GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
_django_json = DjangoJSONEncoder()
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class PersistedQueryError(Exception):
    """Answered as a GraphQL error body: `{"errors": [{"message", "extensions": {"code"}}]}`."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code

    def response(self) -> JsonResponse:
        body = {"errors": [{"message": self.message, "extensions": {"code": self.code}}]}
        response = JsonResponse(body, status=self.status)
        response["Cache-Control"] = "no-store"
        return response


# The `extensions.code` of a request refused before GraphQL sees it, by HTTP status.
TRANSPORT_ERROR_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
}


def transport_error(status: int, message: str) -> JsonResponse:
    code = TRANSPORT_ERROR_CODES.get(status, "BAD_REQUEST")
    response = JsonResponse({"errors": [{"message": message, "extensions": {"code": code}}]}, status=status)
    response["Cache-Control"] = "no-store"
    return response


class GraphQLView(AsyncGraphQLView):
    async def get_context(self, request, response) -> Context:
        # GraphQL over HTTP: a client that prefers `application/graphql-response+json` gets it, and with it
        # a 400 for a request error (the document did not parse or validate). `*/*` stays application/json.
        if request.get_preferred_type(["application/json", GRAPHQL_RESPONSE_JSON]) == GRAPHQL_RESPONSE_JSON:
            response["Content-Type"] = f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8"
            response.graphql_response_json = True
        user, token_rejected = await context_auth(request.headers.get("Authorization"))
        return Context(
            request=request,
            response=response,
            user=user,
            token_rejected=token_rejected,
            request_id=getattr(request, "request_id", ""),
            client_ip=request.META.get("REMOTE_ADDR", ""),
        )

    async def render_graphql_ide(self, request) -> HttpResponse:
        # Strawberry's page loads React and GraphiQL from unpkg.com; ours loads the same builds from this
        # server's static files (backend/staticfiles.py), so the IDE works offline and behind firewalls.
        return HttpResponse(render_to_string("graphql/graphiql.html", request=request))

    def encode_json(self, data: object) -> bytes:
        # orjson: several times faster than json.dumps on a home screen's ~1,100 fields. Results hold only
        # JSON values (scalars are serialized by the schema); anything else goes to Django's encoder.
        return orjson.dumps(data, default=_django_json.default)

    def should_render_graphql_ide(self, request) -> bool:
        # A GET by hash has no `query` parameter; with `Accept: */*` Strawberry would answer GraphiQL.
        return "extensions" not in request.query_params and super().should_render_graphql_ide(request)

    def parse_json(self, data):
        # Bytes are a POST body (query parameters arrive as text): it must be UTF-8 and a JSON object (or
        # an array, which the batch check refuses); Strawberry would fail on `"x"` or `null` with a 500.
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError:
                raise HTTPException(400, "The request body is not valid UTF-8.") from None
            try:
                parsed = super().parse_json(data)
            except RecursionError:
                raise HTTPException(400, "The request body nests too deeply.") from None
            if not isinstance(parsed, dict | list):
                raise HTTPException(400, 'The request body must be a JSON object: {"query": "..."}.')
            return parsed
        return super().parse_json(data)

    async def parse_http_body(self, request):
        data = await super().parse_http_body(request)
        if not isinstance(data, list) and not (
            data.operation_name is None or isinstance(data.operation_name, str)
        ):
            # Strawberry passes it on as sent; a list or object would reach the caches' keys and the
            # executor (GraphQL over HTTP: a request error, 400)
            raise HTTPException(400, "operationName must be a string or null.")
        if isinstance(data, list) or not data.extensions or "persistedQuery" not in data.extensions:
            return data
        persisted = data.extensions["persistedQuery"]
        if not isinstance(persisted, dict) or persisted.get("version") != 1:
            raise PersistedQueryError(
                400, "Unsupported persisted query version", "PERSISTED_QUERY_NOT_SUPPORTED"
            )
        sha256_hash = persisted.get("sha256Hash")
        if not isinstance(sha256_hash, str) or not _SHA256_HEX.fullmatch(sha256_hash):
            raise PersistedQueryError(400, "Invalid persisted query hash", "PERSISTED_QUERY_HASH_MISMATCH")
        django_request = request.request
        django_request.apq_hash = sha256_hash
        key = APQ_CACHE_PREFIX + sha256_hash
        if data.query is None:
            stored = await cache_get(key)
            if not isinstance(stored, str):
                raise PersistedQueryError(200, "PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND")
            return dataclasses.replace(data, query=stored)
        if len(data.query.encode()) > settings.MAX_REQUEST_BYTES:
            raise PersistedQueryError(400, "The persisted query is too large", "PERSISTED_QUERY_TOO_LARGE")
        if hashlib.sha256(data.query.encode()).hexdigest() != sha256_hash:
            raise PersistedQueryError(
                400, "provided sha does not match query", "PERSISTED_QUERY_HASH_MISMATCH"
            )
        django_request.apq_register = (key, data.query)
        return data

    async def execute_single(self, *, request_adapter, **kwargs):
        context, data, sub_response = kwargs["context"], kwargs["request_data"], kwargs["sub_response"]
        started = time.perf_counter()
        lookup = None
        if not context.token_rejected:
            lookup = await response_cache_lookup(
                user=context.user,
                query=data.query,
                operation_name=data.operation_name,
                variables=data.variables,
            )
        if lookup is not None and lookup.body is not None:
            # A document answered before, without errors: `create_response` sends the stored bytes.
            sub_response.graphql_cached_body = lookup.body
            result = ExecutionResult(data={}, errors=None)
            # counted here: the schema's extension never sees an answer from the cache
            operation_record(operation_name_of(data.query, data.operation_name), "query", started)
        else:
            result = await self._execute(request_adapter=request_adapter, **kwargs)
        register = getattr(request_adapter.request, "apq_register", None)
        # Data (even null fields) means the document parsed and passed validation and the limits; a
        # document refused there is never stored, so the cache only holds operations this schema runs.
        if register is not None and result.data is not None:
            key, query = register
            await cache.aset(key, query, timeout=settings.GRAPHQL_APQ_TTL_SECONDS)
        if (
            lookup is not None
            and lookup.body is None
            and not result.errors
            and context.response_cache_until
            and home_screen_only(data.query, data.operation_name)
        ):
            sub_response.graphql_cache_store = (lookup, context.response_cache_until)
        return result

    async def _execute(self, *, request_adapter, **kwargs):
        # GraphQL over HTTP: a mutation sent with GET is 405 Method Not Allowed (Strawberry answers 400).
        try:
            return await super().execute_single(request_adapter=request_adapter, **kwargs)
        except HTTPException as exc:
            if request_adapter.method == "GET" and isinstance(exc.__cause__, InvalidOperationTypeError):
                raise HTTPException(405, exc.reason) from exc
            raise

    def create_response(self, response_data, sub_response):
        cached = getattr(sub_response, "graphql_cached_body", None)
        if cached is not None:
            response = HttpResponse(cached, content_type="application/json")
            for name, value in sub_response.items():
                response[name] = value
            return response
        if getattr(sub_response, "graphql_response_json", False) and _is_request_error(response_data):
            response_data = {key: value for key, value in response_data.items() if key != "data"}
            sub_response.status_code = 400
        response = super().create_response(response_data, sub_response)
        store = getattr(sub_response, "graphql_cache_store", None)
        if store is not None and response.status_code == 200:
            response_cache_store(store[0], response.content, store[1])
        return response

    async def dispatch(self, request, *args, **kwargs):
        try:
            response = await self.run(request=request)
        except PersistedQueryError as exc:
            response = exc.response()
        except HTTPException as exc:
            response = transport_error(exc.status_code, exc.reason)
        if response.status_code == 405:
            response["Allow"] = "GET, POST"
        if request.method == "GET" and getattr(request, "apq_hash", None) and response.status_code == 200:
            response = _http_cache(request, response)
        return response


def _is_request_error(response_data) -> bool:
    """No data and only errors without a path: the document failed to parse or validate, nothing ran."""
    if not isinstance(response_data, dict) or response_data.get("data") is not None:
        return False
    errors = response_data.get("errors") or []
    return bool(errors) and all(not error.get("path") for error in errors)


def _http_cache(request, response):
    """Cache-Control and an ETag for a GET answered by hash; 304 on a matching If-None-Match."""
    if "Cache-Control" in response or not isinstance(response, HttpResponse):
        return response
    try:
        has_errors = "errors" in json.loads(response.content)
    except ValueError:
        has_errors = True
    if has_errors:
        response["Cache-Control"] = "no-store"
        return response
    if request.headers.get("Authorization"):
        response["Cache-Control"] = "private, max-age=0, must-revalidate"
    else:
        response["Cache-Control"] = f"public, max-age={settings.GRAPHQL_APQ_PUBLIC_MAX_AGE}"
    patch_vary_headers(response, ["Authorization"])
    etag = f'"{hashlib.sha256(response.content).hexdigest()[:32]}"'
    response["ETag"] = etag
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match:
        candidates = {tag.removeprefix("W/") for tag in parse_etags(if_none_match)}
        if etag in candidates or "*" in candidates:
            not_modified = HttpResponseNotModified()
            for header in ("Cache-Control", "ETag", "Vary"):
                not_modified[header] = response[header]
            return not_modified
    return response


graphql_view = csrf_exempt(
    GraphQLView.as_view(
        schema=schema,
        graphql_ide="graphiql" if settings.GRAPHQL_IDE else None,
        allow_queries_via_get=True,
        multipart_uploads_enabled=False,
    )
)
