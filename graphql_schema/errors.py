"""The only mapping from domain errors to GraphQL.

Expected failures are schema types: each mutation returns a union of its success type and error types
implementing `Error { code message }`. Not being signed in and access to objects that are not yours are
top-level GraphQL errors with `extensions.code`. Anything else is a bug: masked as "Unexpected error."
with the request id, and logged with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import strawberry
from graphql import GraphQLError, StringValueNode, Visitor, visit
from strawberry.extensions import MaskErrors, SchemaExtension
from strawberry.relay.types import GlobalIDValueError
from strawberry.relay.utils import SliceMetadata

from apps.core import errors as domain

from .enums import UploadRejectReason

logger = logging.getLogger("graphql_schema")

ErrorCode = strawberry.enum(
    domain.ErrorCode, name="ErrorCode", description="Stable codes of expected errors."
)


@strawberry.interface(name="Error", description="An expected error; `message` is safe to show to the user.")
class Error:
    code: ErrorCode
    message: str


@strawberry.type
class ValidationError(Error):
    field: str | None = strawberry.field(description="The input field to fix, when one is at fault.")


@strawberry.type
class NotFound(Error):
    field: str | None = None


@strawberry.type
class InvalidCredentials(Error):
    pass


@strawberry.type
class EmailTaken(Error):
    field: str | None = None


@strawberry.type
class TokenInvalid(Error):
    pass


@strawberry.type
class TokenReused(Error):
    pass


@strawberry.type
class RateLimited(Error):
    retry_after_seconds: int


@strawberry.type
class InsufficientCredits(Error):
    required: int
    balance: int


@strawberry.type
class UploadInvalid(Error):
    field: str | None = None
    reason: UploadRejectReason | None = strawberry.field(
        default=None, description="What is wrong with the file, for the app to react to; null when unknown."
    )


@strawberry.type(description="The idempotency key was already used for a different request.")
class IdempotencyKeyReused(Error):
    field: str | None = None


@strawberry.type(description="The first request with this idempotency key has not finished yet.")
class IdempotencyInProgress(Error):
    field: str | None = None


@strawberry.type(description="An option (aspect ratio, duration, quality, speed) that is not offered here.")
class UnsupportedOption(Error):
    field: str | None = strawberry.field(description="The input field to change.")


@strawberry.type(description="Biometric consent was not given: nothing was stored.")
class ConsentRequired(Error):
    field: str | None = None


@strawberry.type(description="Too few accepted, distinct photos to train a Soul ID.")
class NotEnoughPhotos(Error):
    required: int = strawberry.field(description="Accepted, distinct photos needed.")
    accepted: int = strawberry.field(description="Accepted, distinct photos so far.")


@strawberry.type(description="More photos than a Soul ID takes.")
class TooManyPhotos(Error):
    maximum: int
    count: int = strawberry.field(description="How many there would have been.")


@strawberry.type(description="The Soul ID cannot be used or changed in its current state.")
class CharacterNotReady(Error):
    field: str | None = None


@strawberry.type(description="The store did not confirm this purchase; nothing was granted or charged here.")
class InvalidReceipt(Error):
    field: str | None = None


@strawberry.type(description="The purchase was made while signed in to another account.")
class ReceiptBelongsToAnotherUser(Error):
    pass


@strawberry.type(description="The store product is not in the app's catalogue.")
class ProductUnknown(Error):
    field: str | None = None


@strawberry.type(description="The store did not answer; the purchase is safe: try again later.")
class StoreUnavailable(Error):
    retry_after_seconds: int


@strawberry.type(description="The content rules forbid this input; nothing was charged.")
class ModerationRefused(Error):
    field: str | None = strawberry.field(description="The input field to change.")


_MAPPING: dict[type[domain.DomainError], Callable[[Any], Error]] = {
    domain.ValidationFailed: lambda e: ValidationError(code=e.code, message=e.message, field=e.field),
    domain.NotFound: lambda e: NotFound(code=e.code, message=e.message, field=e.field),
    domain.InvalidCredentials: lambda e: InvalidCredentials(code=e.code, message=e.message),
    domain.EmailTaken: lambda e: EmailTaken(code=e.code, message=e.message, field=e.field),
    domain.TokenInvalid: lambda e: TokenInvalid(code=e.code, message=e.message),
    domain.TokenReused: lambda e: TokenReused(code=e.code, message=e.message),
    domain.RateLimited: lambda e: RateLimited(
        code=e.code, message=e.message, retry_after_seconds=e.retry_after_seconds
    ),
    domain.InsufficientCredits: lambda e: InsufficientCredits(
        code=e.code, message=e.message, required=e.required, balance=e.balance
    ),
    domain.UploadInvalid: lambda e: UploadInvalid(
        code=e.code,
        message=e.message,
        field=e.field,
        reason=UploadRejectReason(e.extra["reason"]) if e.extra.get("reason") else None,
    ),
    domain.IdempotencyKeyReused: lambda e: IdempotencyKeyReused(
        code=e.code, message=e.message, field=e.field
    ),
    domain.IdempotencyInProgress: lambda e: IdempotencyInProgress(
        code=e.code, message=e.message, field=e.field
    ),
    domain.UnsupportedOption: lambda e: UnsupportedOption(code=e.code, message=e.message, field=e.field),
    domain.ConsentRequired: lambda e: ConsentRequired(code=e.code, message=e.message, field=e.field),
    domain.NotEnoughPhotos: lambda e: NotEnoughPhotos(
        code=e.code, message=e.message, required=e.required, accepted=e.accepted
    ),
    domain.TooManyPhotos: lambda e: TooManyPhotos(
        code=e.code, message=e.message, maximum=e.maximum, count=e.count
    ),
    domain.CharacterNotReady: lambda e: CharacterNotReady(code=e.code, message=e.message, field=e.field),
    domain.InvalidReceipt: lambda e: InvalidReceipt(code=e.code, message=e.message, field=e.field),
    domain.ReceiptBelongsToAnotherUser: lambda e: ReceiptBelongsToAnotherUser(code=e.code, message=e.message),
    domain.ProductUnknown: lambda e: ProductUnknown(code=e.code, message=e.message, field=e.field),
    domain.StoreUnavailable: lambda e: StoreUnavailable(
        code=e.code, message=e.message, retry_after_seconds=e.retry_after_seconds
    ),
    domain.ModerationRefused: lambda e: ModerationRefused(code=e.code, message=e.message, field=e.field),
}

ALL_ERROR_TYPES = (
    ValidationError,
    NotFound,
    InvalidCredentials,
    EmailTaken,
    TokenInvalid,
    TokenReused,
    RateLimited,
    InsufficientCredits,
    UploadInvalid,
    IdempotencyKeyReused,
    IdempotencyInProgress,
    UnsupportedOption,
    ConsentRequired,
    NotEnoughPhotos,
    TooManyPhotos,
    CharacterNotReady,
    InvalidReceipt,
    ReceiptBelongsToAnotherUser,
    ProductUnknown,
    StoreUnavailable,
    ModerationRefused,
)


class UnmappedDomainError(TypeError):
    """A DomainError with no GraphQL error type: a bug to fix here, never a silent validation error."""


def error_from(exc: domain.DomainError) -> Error:
    """The GraphQL error type of a domain error (or of its nearest mapped base class). An error class
    nobody mapped raises UnmappedDomainError, which the API masks as an unexpected error and logs."""
    for klass in type(exc).__mro__:
        if klass in _MAPPING:
            return _MAPPING[klass](exc)
    name = type(exc).__qualname__
    raise UnmappedDomainError(f"{name} has no GraphQL error type in graphql_schema/errors.py")


class PublicError(GraphQLError):
    """A top-level error that is meant for the client: never masked, always with `extensions.code`."""

    def __init__(self, message: str, code: domain.ErrorCode) -> None:
        super().__init__(message, extensions={"code": code.value})


def unauthenticated(*, expired: bool = False) -> PublicError:
    if expired:
        return PublicError(
            "Your session expired or is not valid. Refresh it or sign in again.",
            domain.ErrorCode.UNAUTHENTICATED,
        )
    return PublicError("Sign in to do this.", domain.ErrorCode.UNAUTHENTICATED)


def public_error(exc: domain.DomainError) -> PublicError:
    """A domain error raised by a query (which has no result union) as a top-level error: code and field."""
    error = PublicError(exc.message, exc.code)
    if exc.field:
        error.extensions["field"] = exc.field
    return error


def page_arguments_check(
    info: Any, *, first: int | None, after: str | None, last: int | None, before: str | None
) -> None:
    """A connection's paging arguments, checked as strawberry's relay will check them: a negative or too
    large count, or a cursor that is not one, is malformed input (a top-level VALIDATION error), not the
    bug that its ValueError would otherwise be masked as."""
    try:
        SliceMetadata.from_arguments(info, before=before, after=after, first=first, last=last)
    except (ValueError, TypeError) as exc:
        message = (
            str(exc)
            if str(exc).startswith("Argument")
            else "A cursor is not valid: send `after`/`before` cursors from an earlier page."
        )
        raise public_error(domain.ValidationFailed(message)) from None


def not_found(what: str = "object") -> PublicError:
    return PublicError(f"This {what} does not exist.", domain.ErrorCode.NOT_FOUND)


def is_unexpected(error: GraphQLError) -> bool:
    """Parse, validation and public errors keep their text; a Python exception from a resolver does not."""
    original = error.original_error
    if original is None or isinstance(original, PublicError | GlobalIDValueError):
        return False
    if isinstance(original, domain.DomainError):
        return False
    return not (isinstance(original, GraphQLError) and original.original_error is None)


def _request_id(execution_context: Any) -> str:
    context = getattr(execution_context, "context", None)
    return getattr(context, "request_id", "") or ""


class MaskUnexpectedErrors(MaskErrors):
    """Masks bugs (with the request id) and gives every other error a stable `extensions.code`."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=is_unexpected, error_message="Unexpected error.")

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        processed = super()._process_errors(errors)
        for error in processed:
            if isinstance(error.original_error, GlobalIDValueError):
                # A global ID that names a type which is no Node (`node(id:)` with "ShotPlan:..."): the
                # client's ID names nothing, exactly like an ID of nothing.
                error.message = "This object does not exist."
                error.extensions = {**(error.extensions or {}), "code": domain.ErrorCode.NOT_FOUND.value}
            if isinstance(error.original_error, domain.DomainError):
                # Raised by a resolver without a result union (a bad ID in a subscription): its own code.
                error.extensions = {
                    **(error.extensions or {}),
                    **domain_error_extensions(error.original_error),
                }
            if not (error.extensions or {}).get("code"):
                code = (
                    "GRAPHQL_PARSE_FAILED"
                    if error.message.startswith("Syntax Error")
                    else "GRAPHQL_VALIDATION_FAILED"
                )
                error.extensions = {**(error.extensions or {}), "code": code}
        return processed

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        return GraphQLError(
            message=self.error_message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": _request_id(self.execution_context)},
        )


def log_errors(errors: list[GraphQLError], execution_context: Any) -> None:
    request_id = _request_id(execution_context)
    for error in errors:
        if is_unexpected(error):
            logger.error(
                "unexpected GraphQL error [request %s] at %s: %s",
                request_id,
                error.path,
                error,
                exc_info=error.original_error,
            )
        else:
            logger.info("GraphQL error [request %s]: %s", request_id, error.message)


def domain_error_extensions(exc: domain.DomainError) -> dict[str, Any]:
    return {"code": exc.code.value}


def _contains_nul(value: Any) -> bool:
    # Iterative: variables may nest as deep as the JSON parser allows, deeper than Python's call stack.
    pending = [value]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list | tuple):
            pending.extend(value)
    return False


class _NulInStrings(Visitor):
    found = False

    def enter_string_value(self, node: StringValueNode, *args: Any) -> None:
        if "\x00" in node.value:
            self.found = True


class RefuseNulCharacters(SchemaExtension):
    """Text with the NUL character, which no PostgreSQL text column can hold (psycopg refuses even to
    send it in a query), is a request error before anything runs, wherever it is: an argument literal or
    a variable. Without this, any string argument that reaches the database would be a server error."""

    def on_validate(self):
        context = self.execution_context
        visitor = _NulInStrings()
        # A string literal holds a NUL only from the character itself or an escape (\u0000, \u{0}): a
        # text with neither needs no walk of its document (about 70 us for a small mutation).
        text = context.query or ""
        if context.graphql_document is not None and ("\x00" in text or "\\u" in text):
            visit(context.graphql_document, visitor)
        if visitor.found or _contains_nul(context.variables):
            # Set before validation runs: Strawberry then skips it and answers with this error alone.
            context.pre_execution_errors = [
                GraphQLError(
                    "Text cannot contain the NUL character (\\u0000): remove it and send again.",
                    extensions={"code": domain.ErrorCode.VALIDATION.value},
                )
            ]
        yield
