"""Builders for trend tests: real rows, real media files in the (per-test) media folder."""

from __future__ import annotations

import io
from datetime import timedelta
from itertools import count

from django.utils import timezone
from PIL import Image

from apps.trends.media import media_save
from apps.trends.models import Category, FeedSection, FeedSectionItem, Trend, TrendStatus

_serial = count()


def png_bytes(size: tuple[int, int] = (36, 64), color: str = "#3366ff") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def make_category(slug: str = "dance", title: str | None = None, **fields) -> Category:
    return Category.objects.create(slug=slug, title=title or slug.title(), **fields)


def make_trend(
    *,
    category: Category,
    slug: str | None = None,
    status: str = TrendStatus.LIVE,
    published_hours_ago: float = 1.0,
    with_cover: bool = True,
    **fields,
) -> Trend:
    slug = slug or f"trend-{next(_serial)}"
    cover_key = f"trends/covers/{slug}.png"
    if with_cover:
        media_save(cover_key, png_bytes())
    values = {
        "title": slug.replace("-", " ").title(),
        "prompt_template": "{subject} dancing in the rain, {movement}, {user_prompt}",
        "aspect_ratios": ["PORTRAIT_9_16", "SQUARE_1_1"],
        "durations": [5, 8],
        "preferred_model_route": "tiny-wan",
        "cover_image_key": cover_key,
        "cover_width": 36,
        "cover_height": 64,
        "published_at": timezone.now() - timedelta(hours=published_hours_ago)
        if status == TrendStatus.LIVE
        else None,
    }
    values.update(fields)
    trend = Trend(slug=slug, category=category, status=status, **values)
    trend.full_clean()
    trend.save()
    return trend


def make_section(
    section_type: str, *, title: str = "", sort_order: int = 0, items=(), **fields
) -> FeedSection:
    section = FeedSection(section_type=section_type, title=title, sort_order=sort_order, **fields)
    section.full_clean()
    section.save()
    for position, trend in enumerate(items):
        FeedSectionItem.objects.create(section=section, trend=trend, sort_order=position)
    return section
