"""The home screen: which sections, in which order, with which trends, for one audience.

`build_shared_screen` reads everything the screen needs in a constant number of queries (sections, their
hand-picked items, live trends, categories, section type support) and lays it out in Python; the result
is cached per platform, app version and locale (cache.py). `resolve_personal` then fills the sections
that depend on the user (for you, Soul ID prompt, continue) per request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from .cache import screen_cache_get_or_build
from .models import (
    FIRST_APP_VERSIONS,
    PERSONAL_SECTION_TYPES,
    TREND_SECTION_TYPES,
    Category,
    FeedSection,
    FeedSectionItem,
    SectionSource,
    SectionType,
    SectionTypeSupport,
    Trend,
    TrendFavorite,
    TrendStatus,
)
from .targeting import Audience, localized, parse_app_version, targets


@dataclass(frozen=True)
class CategoryEntry:
    slug: str
    title: str
    emoji: str


@dataclass(frozen=True)
class SectionEntry:
    id: str
    section_type: str
    source: str
    title: str
    subtitle: str
    trends: tuple[Trend, ...] = ()
    categories: tuple[CategoryEntry, ...] = ()
    category: CategoryEntry | None = None
    image_key: str = ""
    image_width: int | None = None
    image_height: int | None = None
    action_url: str = ""
    max_items: int = 10
    personal: bool = False


@dataclass(frozen=True)
class SharedScreen:
    audience: Audience
    sections: tuple[SectionEntry, ...]
    # Every live trend this audience may see, best first: the pool personal sections draw from.
    eligible: tuple[Trend, ...] = ()
    categories: dict[str, CategoryEntry] = field(default_factory=dict)
    built_at: datetime | None = None


def _trending_key(trend: Trend) -> tuple:
    return (not trend.pinned, -trend.trending_score, -trend.sort_weight, trend.slug)


def _category_key(trend: Trend) -> tuple:
    return (not trend.pinned, -trend.sort_weight, -trend.trending_score, trend.slug)


def _active(section: FeedSection, now: datetime) -> bool:
    if section.active_from and section.active_from > now:
        return False
    return not (section.active_until and section.active_until <= now)


def _with_category(row: Trend | FeedSection, category_by_id: dict) -> None:
    """Gives `row` its category from those read once, as `select_related` would (no query on access). A
    category added after that read (and given to a trend since) is left to load on access."""
    category = category_by_id.get(row.category_id)
    if category is not None:
        type(row).category.field.set_cached_value(row, category)


def build_shared_screen(audience: Audience, now: datetime | None = None) -> tuple[SharedScreen, float | None]:
    """The shared screen for `audience`, and the time (unix seconds) it stops being valid, if any."""
    now = now or timezone.now()
    boundaries: list[datetime] = []

    # 1. Which section types this app can render.
    support = {
        row.section_type: row.min_version_for(audience.platform) for row in SectionTypeSupport.objects.all()
    }

    def renders(section_type: str) -> bool:
        minimum = support.get(section_type) or FIRST_APP_VERSIONS.get(section_type)
        return minimum is not None and audience.version >= parse_app_version(minimum)

    # Every category, active or not, read once: trends and sections get theirs from here (a join would
    # build one Category per trend: 200 more model instances per build).
    category_rows = list(Category.objects.all())
    category_by_id = {row.id: row for row in category_rows}

    # 2. Enabled sections: active now, targeted at this audience, of a type it renders.
    sections = []
    for section in FeedSection.objects.filter(is_enabled=True):
        _with_category(section, category_by_id)
        for moment in (section.active_from, section.active_until):
            if moment and moment > now:
                boundaries.append(moment)
        if not _active(section, now) or not renders(section.section_type):
            continue
        if not targets(
            audience,
            platforms=section.platforms,
            min_app_version=section.min_app_version,
            locales=section.locales,
        ):
            continue
        sections.append(section)

    # 3. Live trends this audience may see (one query; their categories from the read above).
    eligible: list[Trend] = []
    for trend in Trend.objects.filter(status=TrendStatus.LIVE):
        _with_category(trend, category_by_id)
        if trend.retire_at:
            if trend.retire_at <= now:
                continue
            boundaries.append(trend.retire_at)
        if targets(
            audience, platforms=trend.platforms, min_app_version=trend.min_app_version, locales=trend.locales
        ):
            eligible.append(trend)
    eligible.sort(key=_trending_key)
    by_id = {trend.id: trend for trend in eligible}

    # 4. Hand-picked items of the manual sections (one query).
    picked: dict = {}
    manual_ids = [
        s.id for s in sections if s.source == SectionSource.MANUAL and s.section_type in TREND_SECTION_TYPES
    ]
    if manual_ids:
        for item in FeedSectionItem.objects.filter(section_id__in=manual_ids).order_by("sort_order", "id"):
            if item.trend_id in by_id:
                picked.setdefault(item.section_id, []).append(by_id[item.trend_id])

    # 5. Active categories, in their order, translated.
    categories: dict[str, CategoryEntry] = {}
    category_ids_in_use = {trend.category_id for trend in eligible}
    active_categories = [row for row in category_rows if row.is_active]
    for row in active_categories:
        categories[row.slug] = CategoryEntry(
            slug=row.slug, title=localized(row.title, row.titles, audience.locale), emoji=row.emoji
        )

    new_since = now - timedelta(hours=settings.TRENDS_NEW_TODAY_HOURS)
    entries: list[SectionEntry] = []
    for section in sections:
        kind, source, limit = section.section_type, section.source, section.max_items
        base = SectionEntry(
            id=str(section.id),
            section_type=kind,
            source=source,
            title=localized(section.title, section.titles, audience.locale),
            subtitle=localized(section.subtitle, section.subtitles, audience.locale),
            action_url=section.action_url,
            max_items=limit,
        )
        if kind in PERSONAL_SECTION_TYPES:
            entries.append(replace(base, personal=True))
        elif kind == SectionType.CATEGORY_CHIPS:
            chips = tuple(categories[row.slug] for row in active_categories if row.id in category_ids_in_use)[
                :limit
            ]
            if chips:
                entries.append(replace(base, categories=chips))
        elif kind == SectionType.PROMO:
            entries.append(
                replace(
                    base,
                    image_key=section.image_key,
                    image_width=section.image_width,
                    image_height=section.image_height,
                )
            )
        elif source == SectionSource.FOR_YOU:
            entries.append(replace(base, personal=True))
        else:
            if source == SectionSource.MANUAL:
                chosen = picked.get(section.id, [])
            elif source == SectionSource.TRENDING:
                chosen = eligible
            elif source == SectionSource.NEW_TODAY:
                fresh = [t for t in eligible if t.published_at and t.published_at >= new_since]
                chosen = sorted(fresh, key=lambda t: (t.published_at, t.slug), reverse=True)
                boundaries.extend(
                    t.published_at + timedelta(hours=settings.TRENDS_NEW_TODAY_HOURS) for t in chosen[:limit]
                )
            elif source == SectionSource.CATEGORY:
                chosen = sorted(
                    (t for t in eligible if t.category_id == section.category_id), key=_category_key
                )
            else:  # pragma: no cover - a source added without a layout
                chosen = []
            if chosen:
                category = categories.get(section.category.slug) if section.category_id else None
                entries.append(replace(base, trends=tuple(chosen[:limit]), category=category))

    screen = SharedScreen(
        audience=audience,
        sections=tuple(entries),
        eligible=tuple(eligible),
        categories=categories,
        built_at=now,
    )
    valid_until = min(boundaries).timestamp() if boundaries else None
    return screen, valid_until


# --- Per user --------------------------------------------------------------------------------------


def _for_you(screen: SharedScreen, user, limit: int) -> tuple[Trend, ...]:
    """Trends from the categories the user favorited (not the favorites themselves), then trending ones."""
    if user is None:
        return screen.eligible[:limit]
    favorites = list(TrendFavorite.objects.filter(user=user).values_list("trend_id", "trend__category_id"))
    if not favorites:
        return screen.eligible[:limit]
    favorite_ids = {trend_id for trend_id, _ in favorites}
    liked_categories = {category_id for _, category_id in favorites}
    first = [t for t in screen.eligible if t.category_id in liked_categories and t.id not in favorite_ids]
    rest = [t for t in screen.eligible if t.category_id not in liked_categories and t.id not in favorite_ids]
    return tuple((first + rest)[:limit])


# What the personal sections ask of the apps above trends (they register the answer in their
# AppConfig.ready): does the user have a usable Soul ID (apps.characters), a video to continue
# (apps.generations)? Unregistered: the section is left out.
_personal_checks: dict[str, Callable[..., bool]] = {}


def personal_check_register(section_type: str, check: Callable[..., bool]) -> None:
    """`check(user=...)` decides a personal section: SOUL_ID_PROMPT is shown when it is false (no usable
    Soul ID yet), CONTINUE when it is true (a video in progress or ready)."""
    _personal_checks[section_type] = check


def _personal(section_type: str, user) -> bool | None:
    check = _personal_checks.get(section_type)
    return None if check is None or user is None else check(user=user)


def resolve_personal(screen: SharedScreen, user) -> list[SectionEntry]:
    """The sections this user gets: shared ones as cached, personal ones resolved now."""
    resolved: list[SectionEntry] = []
    for section in screen.sections:
        if not section.personal:
            resolved.append(section)
        elif section.section_type == SectionType.SOUL_ID_PROMPT:
            if user is None or _personal(SectionType.SOUL_ID_PROMPT, user) is False:
                resolved.append(section)
        elif section.section_type == SectionType.CONTINUE:
            # Shown when the user has a video in progress or ready to watch; the app lists them with the
            # `generations` query (the section carries no items). Left out for anyone else.
            if _personal(SectionType.CONTINUE, user):
                resolved.append(section)
        elif section.source == SectionSource.FOR_YOU:
            trends = _for_you(screen, user, section.max_items)
            if trends:
                resolved.append(replace(section, trends=trends))
    return resolved


def shared_screen(audience: Audience) -> tuple[SharedScreen, float]:
    """The cached shared screen for `audience` and the unix time it expires."""
    return screen_cache_get_or_build(f"home:{audience.cache_key}", lambda: build_shared_screen(audience))


def personal_segment(user) -> str:
    """Everything about `user` that their home screen depends on (what `resolve_personal` and the trends'
    `viewerHasFavorited` read), as a short key: users with the same segment get the same screen. Signed-out
    callers are one segment; most new users share another (no favorites, no Soul ID, no video)."""
    if user is None:
        return "anonymous"
    favorites = sorted(
        str(pk) for pk in TrendFavorite.objects.filter(user=user).values_list("trend_id", flat=True)
    )
    facts = [
        _personal(SectionType.SOUL_ID_PROMPT, user),
        _personal(SectionType.CONTINUE, user),
        *favorites,
    ]
    return hashlib.sha256(repr(facts).encode()).hexdigest()[:32]


def explain_sections(audience: Audience, screen: SharedScreen, now: datetime | None = None) -> list[tuple]:
    """For the admin preview: every section with why it is not on this audience's screen (None if it is)."""
    now = now or timezone.now()
    support = {
        row.section_type: row.min_version_for(audience.platform) for row in SectionTypeSupport.objects.all()
    }
    shown = {entry.id for entry in screen.sections}
    explained = []
    for section in FeedSection.objects.select_related("category"):
        minimum = support.get(section.section_type) or FIRST_APP_VERSIONS.get(section.section_type, "")
        if not section.is_enabled:
            reason = "turned off"
        elif not _active(section, now):
            reason = "outside its active window"
        elif not minimum or audience.version < parse_app_version(minimum):
            reason = f"this app version cannot render {section.get_section_type_display()} (needs {minimum})"
        elif not targets(
            audience,
            platforms=section.platforms,
            min_app_version=section.min_app_version,
            locales=section.locales,
        ):
            reason = "not targeted at this platform, version or locale"
        elif str(section.id) not in shown:
            reason = "nothing to show"
        else:
            reason = None
        explained.append((section, reason))
    return explained
