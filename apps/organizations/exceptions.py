"""Errors of API-key authentication. Only the REST API raises them (GraphQL signs users in with tokens),
so they live here rather than in apps/core/errors.py, whose every error has a GraphQL type."""

from apps.core.errors import DomainError, ErrorCode


class ApiKeyInvalid(DomainError):
    code = ErrorCode.UNAUTHENTICATED
    default_message = (
        "Send a valid API key: `Authorization: Bearer dfk_live_...`. This one is unknown or revoked."
    )


class ApiKeyForbidden(DomainError):
    code = ErrorCode.FORBIDDEN
    default_message = "This API key does not have the scope this request needs."
