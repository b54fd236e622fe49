from __future__ import annotations

import strawberry
from asgiref.sync import sync_to_async
from strawberry import Info

from apps.core.errors import DomainError, ValidationFailed
from apps.generations.pricing import home_screen_with_card_prices
from apps.trends import selectors

from ..enums import Platform
from ..errors import page_arguments_check, public_error
from .types import Screen, TrendConnection, TrendType, section_from, trend_prices_known

SCREEN_ID = "home"


@strawberry.type
class TrendQueries:
    @strawberry.field(
        description="The home screen: the sections this app can render, for its platform, version and locale."
    )
    async def home_screen(
        self, info: Info, platform: Platform, app_version: str, locale: str | None = None
    ) -> Screen:
        try:
            audience = selectors.audience_parse(
                platform=platform.value, app_version=app_version, locale=locale
            )
        except ValidationFailed as exc:
            raise public_error(exc) from None
        info.context.trends_locale = audience.locale
        user = info.context.user
        screen, trends, prices = await sync_to_async(home_screen_with_card_prices)(
            audience=audience, user=user
        )
        trend_prices_known(info, trends, prices)
        until = info.context.response_cache_until
        info.context.response_cache_until = min(until, screen.expires_at) if until else screen.expires_at
        return Screen(
            id=strawberry.ID(SCREEN_ID),
            sections=[section_from(entry) for entry in screen.sections],
            generated_at=screen.generated_at,
        )

    @strawberry.field(description="Live trends, newest first; filter by category or tag.")
    async def trends(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        category: str | None = None,
        tag: str | None = None,
    ) -> TrendConnection:
        page_arguments_check(info, first=first, after=after, last=last, before=before)

        def page() -> TrendConnection:
            return TrendConnection.resolve_connection(
                selectors.trends_live(category=category, tag=tag),
                info=info,
                first=first,
                after=after,
                last=last,
                before=before,
            )

        try:
            return await sync_to_async(page)()
        except DomainError as exc:
            raise public_error(exc) from None

    @strawberry.field(description="A live trend by its slug; null when there is none.")
    async def trend(self, slug: str) -> TrendType | None:
        return await sync_to_async(selectors.trend_get_live)(slug=slug)
