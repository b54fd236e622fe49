"""GraphQL types of accounts (API.md): User, Device, and the payloads of the account mutations."""

from __future__ import annotations

from datetime import datetime

import strawberry
import strawberry_django

from apps.accounts import models, selectors
from apps.credits.models import Wallet
from apps.purchases.selectors import plan_of

from ..enums import Platform
from ..purchases.types import Plan
from ..toolkit import ModelNode


@strawberry_django.type(models.User, name="User")
class UserType(ModelNode):
    email: str

    @strawberry_django.field(
        description="Credits the user can spend now.", select_related=["wallet"], only=["wallet__balance"]
    )
    def credits(self, root: strawberry.Parent[models.User]) -> int:
        try:
            return root.wallet.balance
        except Wallet.DoesNotExist:
            return 0

    @strawberry_django.field(description="The user's plan (subscription); null without one.")
    def plan(self, root: strawberry.Parent[models.User]) -> Plan | None:
        subscription = plan_of(user=root)
        return Plan.of(subscription) if subscription else None

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        return queryset & selectors.users_visible_to(user=info.context.user)


@strawberry_django.type(models.Device, name="Device")
class DeviceType(ModelNode):
    token: str
    platform: Platform  # type: ignore[valid-type]
    app_version: str
    locale: str
    last_seen_at: datetime

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        return queryset & selectors.devices_visible_to(user=info.context.user)


@strawberry.type
class AuthPayload:
    access_token: str
    access_token_expires_at: datetime
    refresh_token: str
    user: UserType


@strawberry.type
class DevicePayload:
    device: DeviceType


@strawberry.type
class DeletePayload:
    id: strawberry.ID
