"""GraphQL types of trends and the server-driven home screen.

`Trend` is a plain Strawberry type over the `apps.trends.models.Trend` row (not a strawberry-django type):
the home screen hands out cached rows, and plain attribute resolvers read them without a database query
or a thread hop (the toolkit's style for cached rows, graphql_schema/toolkit.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

import strawberry
from asgiref.sync import sync_to_async
from strawberry import Info, relay
from strawberry.dataloader import DataLoader

from apps.generations.pricing import trend_card_prices
from apps.trends import models, selectors
from apps.trends.media import media_url
from apps.trends.screen import CategoryEntry, SectionEntry
from apps.trends.targeting import localized

from ..enums import AspectRatio, CameraMovement, QualityTier, SectionSource, TrendRequirement
from ..toolkit import node_key


@strawberry.type(description="An image to download: its URL and size in pixels.")
class ImageAsset:
    url: str
    width: int | None
    height: int | None


@strawberry.type(description="A short looping video to download: its URL, size in pixels and length.")
class VideoAsset:
    url: str
    width: int | None
    height: int | None
    duration_seconds: float | None


@strawberry.type(description="The music a trend's videos carry, with what the app shows of it.")
class TrendSound:
    title: str
    artist: str | None
    licence: str | None = strawberry.field(description="The licence note, like who licensed it and how.")


@strawberry.type(description="A group of trends, like Dance or Cinematic.")
class Category:
    slug: str
    title: str
    emoji: str | None


@strawberry.type(description="The price of one video from a trend at one quality tier.")
class TrendPrice:
    quality: QualityTier
    credits: int


@strawberry.type(
    description="The camera and look a trend starts from; a generation's shot plan builds on it."
)
class CinematicDefaults:
    camera_body: str | None
    lens: str | None
    focal_length_mm: int | None
    aperture: float | None = strawberry.field(description="The f-number, like 1.8.")
    movement: CameraMovement
    movement_strength: float = strawberry.field(description="0 (subtle) to 1 (strong).")
    lighting: str | None
    mood: str | None


def _category(root: models.Trend, info: Info) -> Category:
    locale = getattr(info.context, "trends_locale", None)
    row = root.category
    return Category(slug=row.slug, title=localized(row.title, row.titles, locale), emoji=row.emoji or None)


def _favorites_loader(info: Info) -> DataLoader:
    """One query per request for "which of these trends has the caller favorited"."""
    loader = getattr(info.context, "trends_favorites_loader", None)
    if loader is None:
        user = info.context.user

        async def load(ids: list[Any]) -> list[bool]:
            favorited = await sync_to_async(selectors.trend_ids_favorited)(user=user, trend_ids=ids)
            return [trend_id in favorited for trend_id in ids]

        loader = DataLoader(load_fn=load)
        info.context.trends_favorites_loader = loader
    return loader


def _prices_loader(info: Info) -> DataLoader:
    """One batch per request for the trend cards' prices (apps/generations/pricing.py: the routes and the
    price rules read once)."""
    loader = getattr(info.context, "trends_prices_loader", None)
    if loader is None:

        async def load(trends: list[models.Trend]) -> list[dict[str, int]]:
            return await sync_to_async(trend_card_prices)(trends)

        loader = DataLoader(load_fn=load, cache_key_fn=lambda trend: trend.pk)
        info.context.trends_prices_loader = loader
    return loader


def _known_prices(info: Info, root: models.Trend) -> dict[str, int] | None:
    """The trend's card prices when the home screen read them with its trends (`trend_prices_known`)."""
    known = getattr(info.context, "trends_card_prices", None)
    return None if known is None else known.get(root.pk)


def trend_prices_known(info: Info, trends: Iterable[models.Trend], prices: Iterable[dict[str, int]]) -> None:
    """Gives this request's Trend fields the card prices read for `trends`: their price fields then resolve
    without a DataLoader (about a hundred awaited fields fewer on a home screen); others still batch."""
    known = getattr(info.context, "trends_card_prices", None) or {}
    known.update(zip((trend.pk for trend in trends), prices, strict=True))
    info.context.trends_card_prices = known


async def _later(pending, then):
    return then(await pending)


def _tier_prices(prices: dict[str, int]) -> list[TrendPrice]:
    return [TrendPrice(quality=tier, credits=prices[tier.value]) for tier in QualityTier]


@strawberry.type(
    name="Trend", description="A video preset on the home screen: pick it, add yourself, get a video."
)
class TrendType(relay.Node):
    id: relay.NodeID[str]
    slug: str
    title: str
    subtitle: str
    tags: list[str]
    pinned: bool
    published_at: datetime | None

    @strawberry.field
    def category(self, root: strawberry.Parent[models.Trend], info: Info) -> Category:
        return _category(root, info)

    @strawberry.field(description="The cover picture; null while the trend has none.")
    def cover_image(self, root: strawberry.Parent[models.Trend]) -> ImageAsset | None:
        url = media_url(root.cover_image_key)
        return url and ImageAsset(url=url, width=root.cover_width, height=root.cover_height)

    @strawberry.field(description="A short preview of what the trend makes; null when it has none.")
    def preview_video(self, root: strawberry.Parent[models.Trend]) -> VideoAsset | None:
        url = media_url(root.preview_video_key)
        return url and VideoAsset(
            url=url,
            width=root.preview_width,
            height=root.preview_height,
            duration_seconds=root.preview_duration_seconds,
        )

    @strawberry.field(description="Its videos' music; null when they are silent.")
    def sound(self, root: strawberry.Parent[models.Trend]) -> TrendSound | None:
        if not root.has_sound:
            return None
        return TrendSound(
            title=root.sound_title, artist=root.sound_artist or None, licence=root.sound_licence or None
        )

    @strawberry.field(description="Whether its videos carry a sound (for the home screen's cards).")
    def has_sound(self, root: strawberry.Parent[models.Trend]) -> bool:
        return root.has_sound

    @strawberry.field
    def requires(self, root: strawberry.Parent[models.Trend]) -> TrendRequirement:
        return TrendRequirement(root.requires)

    @strawberry.field
    def aspect_ratios(self, root: strawberry.Parent[models.Trend]) -> list[AspectRatio]:
        return [AspectRatio(value) for value in root.aspect_ratios]

    @strawberry.field
    def default_aspect_ratio(self, root: strawberry.Parent[models.Trend]) -> AspectRatio:
        return AspectRatio(root.default_aspect_ratio)

    @strawberry.field(description="Lengths in seconds the user may choose.")
    def durations(self, root: strawberry.Parent[models.Trend]) -> list[int]:
        return list(root.durations)

    @strawberry.field
    def default_duration_seconds(self, root: strawberry.Parent[models.Trend]) -> int:
        return root.default_duration_seconds

    @strawberry.field
    def default_quality(self, root: strawberry.Parent[models.Trend]) -> QualityTier:
        return QualityTier(root.default_quality)

    @strawberry.field(
        description="Credits per video at each quality tier, at the default length and speed (what "
        "generationQuote says for the trend's defaults)."
    )
    def prices(self, root: strawberry.Parent[models.Trend], info: Info) -> list[TrendPrice]:
        known = _known_prices(info, root)
        if known is None:
            return _later(_prices_loader(info).load(root), _tier_prices)  # graphql-core awaits it
        return _tier_prices(known)

    @strawberry.field(description="Credits per video at the default quality tier, length and speed.")
    def price_credits(self, root: strawberry.Parent[models.Trend], info: Info) -> int:
        known = _known_prices(info, root)
        if known is None:
            return _later(_prices_loader(info).load(root), lambda prices: prices[root.default_quality])
        return known[root.default_quality]

    @strawberry.field
    def cinematic(self, root: strawberry.Parent[models.Trend]) -> CinematicDefaults:
        return CinematicDefaults(
            camera_body=root.camera_body or None,
            lens=root.lens or None,
            focal_length_mm=root.focal_length_mm,
            aperture=float(root.aperture) if root.aperture is not None else None,
            movement=CameraMovement(root.camera_movement),
            movement_strength=root.movement_strength,
            lighting=root.lighting or None,
            mood=root.mood or None,
        )

    @strawberry.field(description="How many people favorited it.")
    def favorites_count(self, root: strawberry.Parent[models.Trend]) -> int:
        return root.favorites

    @strawberry.field(description="How many videos were made from it.")
    def generations_count(self, root: strawberry.Parent[models.Trend]) -> int:
        return root.generations_succeeded

    @strawberry.field(description="Whether the signed-in user favorited it; false when signed out.")
    async def viewer_has_favorited(self, root: strawberry.Parent[models.Trend], info: Info) -> bool:
        if info.context.user is None:
            return False
        return await _favorites_loader(info).load(root.pk)

    @classmethod
    def is_type_of(cls, obj: Any, info: Info) -> bool:
        return isinstance(obj, (cls, models.Trend))

    @classmethod
    def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str], required: bool = False):
        # Sync on purpose: the `node` field (strawberry-django) runs it in a worker thread.
        wanted = [node_key(node_id) for node_id in node_ids]
        found = {trend.pk: trend for trend in selectors.trends_get_live_by_ids(ids=[w for w in wanted if w])}
        return [found.get(trend_id) for trend_id in wanted]


TrendConnection = relay.ListConnection[TrendType]


# --- The home screen -------------------------------------------------------------------------------

SOUL_ID_DEEP_LINK = "diffuse://soul-id/new"


@strawberry.interface(description="What every home screen section has.")
class HomeSection:
    id: strawberry.ID
    title: str


def _trend_section_fields(entry: SectionEntry) -> dict[str, Any]:
    return {
        "id": strawberry.ID(entry.id),
        "title": entry.title,
        "subtitle": entry.subtitle or None,
        "source": SectionSource(entry.source),
        "trends": list(entry.trends),
        "category": _category_entry(entry.category),
    }


def _category_entry(entry: CategoryEntry | None) -> Category | None:
    if entry is None:
        return None
    return Category(slug=entry.slug, title=entry.title, emoji=entry.emoji or None)


@strawberry.type(description="The big banner at the top: a few trends, one at a time.")
class HeroSection(HomeSection):
    subtitle: str | None
    source: SectionSource
    trends: list[TrendType]
    category: Category | None


@strawberry.type(description="A row of trends that scrolls sideways.")
class TrendCarouselSection(HomeSection):
    subtitle: str | None
    source: SectionSource
    trends: list[TrendType]
    category: Category | None = strawberry.field(description="For a category row: where 'see all' goes.")


@strawberry.type(description="Trends in a grid.")
class TrendGridSection(HomeSection):
    subtitle: str | None
    source: SectionSource
    trends: list[TrendType]
    category: Category | None


@strawberry.type(description="Chips that open a category.")
class CategoryChipsSection(HomeSection):
    categories: list[Category]


@strawberry.type(description="A banner that opens a deep link.")
class PromoSection(HomeSection):
    subtitle: str | None
    image: ImageAsset | None
    action_url: str


@strawberry.type(description="The user's unfinished or recent videos (filled by the generations feature).")
class ContinueSection(HomeSection):
    subtitle: str | None


@strawberry.type(description="Asks a user without a Soul ID to create one.")
class SoulIdPromptSection(HomeSection):
    subtitle: str | None
    action_url: str = strawberry.field(description="The deep link that starts creating a Soul ID.")


Section = Annotated[
    HeroSection
    | TrendCarouselSection
    | TrendGridSection
    | CategoryChipsSection
    | PromoSection
    | ContinueSection
    | SoulIdPromptSection,
    strawberry.union("Section", description="One typed section of the home screen."),
]


@strawberry.type(description="The home screen, laid out by the server.")
class Screen:
    id: strawberry.ID
    sections: list[Section]
    generated_at: datetime = strawberry.field(description="When the shared part of this screen was built.")


def section_from(entry: SectionEntry) -> Any:
    kind = entry.section_type
    if kind == models.SectionType.HERO:
        return HeroSection(**_trend_section_fields(entry))
    if kind == models.SectionType.CAROUSEL:
        return TrendCarouselSection(**_trend_section_fields(entry))
    if kind == models.SectionType.GRID:
        return TrendGridSection(**_trend_section_fields(entry))
    if kind == models.SectionType.CATEGORY_CHIPS:
        return CategoryChipsSection(
            id=strawberry.ID(entry.id),
            title=entry.title,
            categories=[_category_entry(c) for c in entry.categories],
        )
    if kind == models.SectionType.PROMO:
        url = media_url(entry.image_key)
        image = url and ImageAsset(url=url, width=entry.image_width, height=entry.image_height)
        return PromoSection(
            id=strawberry.ID(entry.id),
            title=entry.title,
            subtitle=entry.subtitle or None,
            image=image,
            action_url=entry.action_url,
        )
    if kind == models.SectionType.CONTINUE:
        return ContinueSection(id=strawberry.ID(entry.id), title=entry.title, subtitle=entry.subtitle or None)
    if kind == models.SectionType.SOUL_ID_PROMPT:
        return SoulIdPromptSection(
            id=strawberry.ID(entry.id),
            title=entry.title,
            subtitle=entry.subtitle or None,
            action_url=entry.action_url or SOUL_ID_DEEP_LINK,
        )
    raise ValueError(f"no GraphQL type for section type {kind!r}")


# --- Mutation payloads -----------------------------------------------------------------------------


@strawberry.type
class TrendImpressionsRecorded:
    recorded: int = strawberry.field(description="Live trends counted (once each per batch).")
    ignored: int = strawberry.field(description="Unknown, retired or repeated slugs, not counted.")


@strawberry.type
class TrendPayload:
    trend: TrendType


@strawberry.type
class FavoriteTrendPayload:
    trend: TrendType
    favorited: bool


@strawberry.type
class TrendSharePayload:
    trend: TrendType
