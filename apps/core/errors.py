"""Domain errors: what services raise when a request cannot be done as asked.

Each error has a stable `code` from the one `ErrorCode` enum and a `message` that is safe to show to a
user. `graphql_schema/errors.py` is the only place that turns them into GraphQL types.
"""

from __future__ import annotations

import enum
from typing import Any


class ErrorCode(enum.Enum):
    VALIDATION = "VALIDATION"
    NOT_FOUND = "NOT_FOUND"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    EMAIL_TAKEN = "EMAIL_TAKEN"
    TOKEN_INVALID = "TOKEN_INVALID"
    TOKEN_REUSED = "TOKEN_REUSED"
    INSUFFICIENT_CREDITS = "INSUFFICIENT_CREDITS"
    RATE_LIMITED = "RATE_LIMITED"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    IDEMPOTENCY_IN_PROGRESS = "IDEMPOTENCY_IN_PROGRESS"
    CONSENT_REQUIRED = "CONSENT_REQUIRED"
    NOT_ENOUGH_PHOTOS = "NOT_ENOUGH_PHOTOS"
    TOO_MANY_PHOTOS = "TOO_MANY_PHOTOS"
    CHARACTER_NOT_READY = "CHARACTER_NOT_READY"
    UNSUPPORTED_OPTION = "UNSUPPORTED_OPTION"
    UPLOAD_INVALID = "UPLOAD_INVALID"
    INVALID_RECEIPT = "INVALID_RECEIPT"
    RECEIPT_BELONGS_TO_ANOTHER_USER = "RECEIPT_BELONGS_TO_ANOTHER_USER"
    PRODUCT_UNKNOWN = "PRODUCT_UNKNOWN"
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    MODERATION = "MODERATION"


class DomainError(Exception):
    code: ErrorCode = ErrorCode.VALIDATION
    default_message = "The request could not be completed."

    def __init__(self, message: str | None = None, *, field: str | None = None, **extra: Any) -> None:
        self.message = message or self.default_message
        self.field = field
        self.extra = extra
        super().__init__(self.message)


class ValidationFailed(DomainError):
    code = ErrorCode.VALIDATION
    default_message = "Some input is not valid."


class NotFound(DomainError):
    code = ErrorCode.NOT_FOUND
    default_message = "Not found."


class InvalidCredentials(DomainError):
    code = ErrorCode.INVALID_CREDENTIALS
    default_message = "The email or password is not right."


class EmailTaken(DomainError):
    code = ErrorCode.EMAIL_TAKEN
    default_message = "An account with this email already exists. Sign in instead."


class TokenInvalid(DomainError):
    code = ErrorCode.TOKEN_INVALID
    default_message = "This sign-in has expired or is not valid. Sign in again."


class TokenReused(DomainError):
    code = ErrorCode.TOKEN_REUSED
    default_message = "This session was signed out for your safety. Sign in again."


class InsufficientCredits(DomainError):
    code = ErrorCode.INSUFFICIENT_CREDITS
    default_message = "You do not have enough credits."

    def __init__(self, *, required: int, balance: int, message: str | None = None) -> None:
        super().__init__(message or f"This needs {required} credits and you have {balance}.")
        self.required = required
        self.balance = balance


class RateLimited(DomainError):
    code = ErrorCode.RATE_LIMITED
    default_message = "Too many attempts. Try again later."

    def __init__(self, *, retry_after_seconds: int, message: str | None = None) -> None:
        super().__init__(message or f"Too many attempts. Try again in {retry_after_seconds} seconds.")
        self.retry_after_seconds = retry_after_seconds


class UploadInvalid(DomainError):
    code = ErrorCode.UPLOAD_INVALID
    default_message = "This file cannot be used. Upload a JPEG, PNG, HEIC or WebP photo."


class IdempotencyKeyReused(DomainError):
    code = ErrorCode.IDEMPOTENCY_KEY_REUSED
    default_message = "This request key was already used for a different request. Send a new key."


class IdempotencyInProgress(DomainError):
    code = ErrorCode.IDEMPOTENCY_IN_PROGRESS
    default_message = "The first request with this key is still being handled. Try again in a moment."


class UnsupportedOption(DomainError):
    code = ErrorCode.UNSUPPORTED_OPTION
    default_message = "This option is not available here."


class ConsentRequired(DomainError):
    code = ErrorCode.CONSENT_REQUIRED
    default_message = "Agree to the use of your photos for your Soul ID to continue."


class NotEnoughPhotos(DomainError):
    code = ErrorCode.NOT_ENOUGH_PHOTOS

    def __init__(self, *, required: int, accepted: int, message: str | None = None) -> None:
        super().__init__(
            message
            or f"Training needs at least {required} accepted photos of you, all different; "
            f"{accepted} so far. Add {required - accepted} more."
        )
        self.required = required
        self.accepted = accepted


class TooManyPhotos(DomainError):
    code = ErrorCode.TOO_MANY_PHOTOS

    def __init__(self, *, maximum: int, count: int, message: str | None = None) -> None:
        super().__init__(message or f"A Soul ID takes at most {maximum} photos; this would make {count}.")
        self.maximum = maximum
        self.count = count


class CharacterNotReady(DomainError):
    code = ErrorCode.CHARACTER_NOT_READY
    default_message = "This Soul ID is not ready yet."


class InvalidReceipt(DomainError):
    """The store's signed transaction or purchase token did not verify (forged, truncated, another app's,
    another environment's, expired chain, cancelled or pending purchase)."""

    code = ErrorCode.INVALID_RECEIPT
    default_message = "This purchase could not be verified with the store. Nothing was charged here."


class ReceiptBelongsToAnotherUser(DomainError):
    code = ErrorCode.RECEIPT_BELONGS_TO_ANOTHER_USER
    default_message = "This purchase was made for another account. Sign in with that account to use it."


class ProductUnknown(DomainError):
    code = ErrorCode.PRODUCT_UNKNOWN
    default_message = "This product is not sold in the app. Update the app and try again."


class StoreUnavailable(DomainError):
    """The store did not answer in time: retryable, nothing was granted or lost."""

    code = ErrorCode.STORE_UNAVAILABLE
    default_message = "The store is not answering right now. Your purchase is safe: try again in a minute."

    def __init__(self, message: str | None = None, *, retry_after_seconds: int = 30, **extra) -> None:
        super().__init__(message, **extra)
        self.retry_after_seconds = retry_after_seconds


class ModerationRefused(DomainError):
    """A prompt (or another input) that the content rules forbid; the message never repeats what matched."""

    code = ErrorCode.MODERATION
    default_message = "This request is not allowed by our content rules."
