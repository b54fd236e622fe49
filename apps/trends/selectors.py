"""Reads: the home screen for a caller, the live catalogue, one trend, a user's favorites."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet

from apps.accounts.models import Platform
from apps.core.errors import ValidationFailed

from .models import Trend, TrendFavorite, TrendStatus
from .screen import SectionEntry, personal_segment, resolve_personal, shared_screen
from .targeting import Audience, normalize_locale, parse_app_version


def audience_parse(*, platform: str, app_version: str, locale: str | None) -> Audience:
    """The caller of the home screen, or ValidationFailed naming the argument at fault."""
    if platform not in Platform.values:
        raise ValidationFailed("Platform must be IOS or ANDROID.", field="platform")
    try:
        version = parse_app_version(app_version)
    except ValueError:
        raise ValidationFailed(
            "Give the app version as 1 to 4 numbers separated by dots, like 2.3.1.", field="appVersion"
        ) from None
    try:
        normalized = normalize_locale(locale, default=settings.TRENDS_DEFAULT_LOCALE)
    except ValueError:
        raise ValidationFailed(
            "Give the locale as a language tag, like en or pt-BR.", field="locale"
        ) from None
    return Audience(platform=platform, version=version, locale=normalized)


@dataclass(frozen=True)
class HomeScreen:
    audience: Audience
    sections: list[SectionEntry]
    generated_at: datetime
    # Unix time the shared part stops being current (its cache entry's expiry): a response made from this
    # screen may be reused until then, for callers of the same segment (`home_screen_segment`).
    expires_at: float


def home_screen_get(*, audience: Audience, user=None) -> HomeScreen:
    """The screen for this caller: the cached shared sections with the personal ones resolved for `user`."""
    screen, expires_at = shared_screen(audience)
    return HomeScreen(
        audience=audience,
        sections=resolve_personal(screen, user),
        generated_at=screen.built_at,
        expires_at=expires_at,
    )


def home_screen_segment(*, user=None) -> str:
    """Which users see the same home screen as `user` (a key; "anonymous" when signed out)."""
    return personal_segment(user)


def trends_live(*, category: str | None = None, tag: str | None = None) -> QuerySet[Trend]:
    """The live catalogue, newest first (a stable order, so offset cursors do not skip or repeat)."""
    queryset = Trend.objects.filter(status=TrendStatus.LIVE).select_related("category")
    if category:
        queryset = queryset.filter(category__slug=category, category__is_active=True)
    if tag:
        queryset = queryset.filter(_has_tag(tag))
    return queryset.order_by("-published_at", "slug")


def _has_tag(tag: str):
    from django.db.models import Q

    tag = tag.strip().lower()
    if connection.vendor == "postgresql":
        return Q(tags__contains=[tag])
    # SQLite cannot look inside JSON lists; tags are slugs, so the quoted text matches exactly one tag.
    return Q(tags__icontains=f'"{tag}"')


def trend_get_live(*, slug: str) -> Trend | None:
    return Trend.objects.filter(status=TrendStatus.LIVE, slug=slug).select_related("category").first()


def trends_get_live_by_ids(*, ids: Iterable) -> list[Trend]:
    return list(Trend.objects.filter(status=TrendStatus.LIVE, pk__in=list(ids)).select_related("category"))


def trend_ids_favorited(*, user, trend_ids: Iterable) -> set:
    """Which of `trend_ids` the user has favorited (one query)."""
    if user is None:
        return set()
    return set(
        TrendFavorite.objects.filter(user=user, trend_id__in=list(trend_ids)).values_list(
            "trend_id", flat=True
        )
    )
