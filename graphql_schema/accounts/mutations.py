from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry import Info
from strawberry.relay import to_base64

from apps.accounts import erasure, services

from ..errors import (
    EmailTaken,
    Error,
    InvalidCredentials,
    NotFound,
    RateLimited,
    TokenInvalid,
    TokenReused,
    UnsupportedOption,
    ValidationError,
)
from ..permissions import require_user
from ..services import call_service
from .inputs import RegisterDeviceInput, SignInInput, SignUpInput
from .types import AuthPayload, DeletePayload, DevicePayload

AuthResult = Annotated[
    AuthPayload
    | ValidationError
    | EmailTaken
    | InvalidCredentials
    | RateLimited
    | TokenInvalid
    | TokenReused
    | UnsupportedOption,
    strawberry.union("AuthResult"),
]
DeviceResult = Annotated[DevicePayload | ValidationError, strawberry.union("DeviceResult")]
DeleteResult = Annotated[
    DeletePayload | NotFound | ValidationError | InvalidCredentials, strawberry.union("DeleteResult")
]


def _auth_payload(result: services.AuthTokens | Error) -> AuthResult:
    if isinstance(result, Error):
        return result
    return AuthPayload(
        access_token=result.access_token,
        access_token_expires_at=result.access_token_expires_at,
        refresh_token=result.refresh_token,
        user=result.user,
    )


@strawberry.type
class AccountMutations:
    @strawberry.mutation(description="Create an account with email and password; signs in.")
    async def sign_up(self, info: Info, input: SignUpInput) -> AuthResult:
        return _auth_payload(
            await call_service(
                services.user_sign_up, email=input.email, password=input.password, ip=info.context.client_ip
            )
        )

    @strawberry.mutation(description="Sign in with email and password.")
    async def sign_in(self, info: Info, input: SignInInput) -> AuthResult:
        return _auth_payload(
            await call_service(
                services.user_sign_in, email=input.email, password=input.password, ip=info.context.client_ip
            )
        )

    @strawberry.mutation(
        description=(
            "Sign in with a Firebase ID token (Google, Apple, phone...). The first sign-in creates the "
            "account, or links the account with the token's email when Firebase has verified it."
        )
    )
    async def sign_in_with_firebase(self, id_token: str) -> AuthResult:
        return _auth_payload(await call_service(services.user_sign_in_with_firebase, id_token=id_token))

    @strawberry.mutation(description="Trade a refresh token for a new pair. Each refresh token works once.")
    async def refresh_token(self, refresh_token: str) -> AuthResult:
        return _auth_payload(await call_service(services.token_refresh, refresh_token=refresh_token))

    @strawberry.mutation(description="Register this install's FCM token for push notifications.")
    async def register_device(self, info: Info, input: RegisterDeviceInput) -> DeviceResult:
        user = require_user(info)
        result = await call_service(
            services.device_register,
            user=user,
            token=input.token,
            platform=input.platform.value,
            app_version=input.app_version,
            locale=input.locale,
        )
        return result if isinstance(result, Error) else DevicePayload(device=result)

    @strawberry.mutation(description="Stop push notifications to this FCM token.")
    async def unregister_device(self, info: Info, token: str) -> DeleteResult:
        user = require_user(info)
        result = await call_service(services.device_unregister, user=user, token=token)
        return (
            result
            if isinstance(result, Error)
            else DeletePayload(id=strawberry.ID(to_base64("Device", result)))
        )

    @strawberry.mutation(
        description="Delete your account and everything personal in it: Soul IDs, videos, uploads, devices "
        "and sign-ins; videos still being made are canceled. An email account must give its password. "
        "Every token stops working. This cannot be undone."
    )
    async def delete_account(self, info: Info, password: str | None = None) -> DeleteResult:
        user = require_user(info)
        result = await call_service(erasure.account_delete, user=user, password=password)
        if isinstance(result, Error):
            return result
        return DeletePayload(id=strawberry.ID(to_base64("User", result)))
