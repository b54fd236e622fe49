"""Engagement with trends. `recordShare` (API.md) is for generations; trends have `recordTrendShare`."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry import Info

from apps.trends import services

from ..errors import Error, NotFound, ValidationError
from ..permissions import require_user
from ..services import call_service
from .types import FavoriteTrendPayload, TrendImpressionsRecorded, TrendPayload, TrendSharePayload

RecordTrendImpressionsResult = Annotated[
    TrendImpressionsRecorded | ValidationError, strawberry.union("RecordTrendImpressionsResult")
]
TrendResult = Annotated[TrendPayload | NotFound, strawberry.union("TrendResult")]
FavoriteTrendResult = Annotated[FavoriteTrendPayload | NotFound, strawberry.union("FavoriteTrendResult")]
TrendShareResult = Annotated[
    TrendSharePayload | NotFound | ValidationError, strawberry.union("TrendShareResult")
]


@strawberry.type
class TrendMutations:
    @strawberry.mutation(
        description="Count the trends a screen showed (a batch of slugs, up to 100). "
        "Unknown, retired and repeated slugs are ignored."
    )
    async def record_trend_impressions(self, slugs: list[str]) -> RecordTrendImpressionsResult:
        result = await call_service(services.trend_impressions_record, slugs=slugs)
        if isinstance(result, Error):
            return result
        recorded, ignored = result
        return TrendImpressionsRecorded(recorded=recorded, ignored=ignored)

    @strawberry.mutation(description="Count that the user opened a trend's page.")
    async def record_trend_open(self, slug: str) -> TrendResult:
        result = await call_service(services.trend_open_record, slug=slug)
        return result if isinstance(result, Error) else TrendPayload(trend=result)

    @strawberry.mutation(
        description="Count that the user shared a trend (not a generation: see recordShare)."
    )
    async def record_trend_share(self, slug: str, channel: str | None = None) -> TrendShareResult:
        result = await call_service(services.trend_share_record, slug=slug, channel=channel)
        return result if isinstance(result, Error) else TrendSharePayload(trend=result)

    @strawberry.mutation(
        description="Add a trend to the signed-in user's favorites. Doing it twice counts once."
    )
    async def favorite_trend(self, info: Info, slug: str) -> FavoriteTrendResult:
        user = require_user(info)
        result = await call_service(services.trend_favorite, user=user, slug=slug)
        return result if isinstance(result, Error) else FavoriteTrendPayload(trend=result, favorited=True)

    @strawberry.mutation(description="Remove a trend from the signed-in user's favorites.")
    async def unfavorite_trend(self, info: Info, slug: str) -> FavoriteTrendResult:
        user = require_user(info)
        result = await call_service(services.trend_unfavorite, user=user, slug=slug)
        return result if isinstance(result, Error) else FavoriteTrendPayload(trend=result, favorited=False)
