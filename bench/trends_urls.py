"""The project's URLs plus GET /bench/home: the home screen as plain Django JSON (bench/trends_home.py).

Same data through the same function as `homeScreen` (`home_screen_with_card_prices`: `home_screen_get`, so
cached exactly when GraphQL's is, and the card prices, `trend_card_prices`: a card shows what a video costs on
the route its tier takes), same fields as the benchmark's GraphQL query (each card's category in the screen's
language, as `homeScreen` localizes it), serialized by hand: the difference measured is what GraphQL costs.
"""

from __future__ import annotations

import base64

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse
from django.urls import path

from apps.generations.pricing import home_screen_with_card_prices
from apps.trends.media import media_url
from apps.trends.selectors import audience_parse
from apps.trends.targeting import localized
from backend.urls import urlpatterns as project_urlpatterns

TYPENAMES = {
    "hero": "HeroSection",
    "carousel": "TrendCarouselSection",
    "grid": "TrendGridSection",
    "category_chips": "CategoryChipsSection",
    "promo": "PromoSection",
    "continue": "ContinueSection",
    "soul_id_prompt": "SoulIdPromptSection",
}


def _trend(trend, prices: dict, locale: str | None) -> dict:
    url = media_url(trend.cover_image_key)
    category = trend.category
    return {
        "id": base64.b64encode(f"Trend:{trend.pk}".encode()).decode(),
        "slug": trend.slug,
        "title": trend.title,
        "priceCredits": prices[trend.pk][trend.default_quality],
        "coverImage": url and {"url": url, "width": trend.cover_width, "height": trend.cover_height},
        # A card's category in the screen's language, as homeScreen shows it (graphql_schema/trends/types.py)
        "category": {"slug": category.slug, "title": localized(category.title, category.titles, locale)},
    }


def _section(entry, prices: dict, locale: str | None) -> dict:
    out = {"__typename": TYPENAMES[entry.section_type], "id": entry.id, "title": entry.title}
    if entry.section_type in ("hero", "carousel", "grid"):
        out["trends"] = [_trend(t, prices, locale) for t in entry.trends]
    elif entry.section_type == "category_chips":
        out["categories"] = [{"slug": c.slug, "title": c.title} for c in entry.categories]
    return out


async def bench_home(request: HttpRequest) -> JsonResponse:
    audience = audience_parse(
        platform=request.GET["platform"],
        app_version=request.GET["appVersion"],
        locale=request.GET.get("locale"),
    )
    screen, trends, card_prices = await sync_to_async(home_screen_with_card_prices)(
        audience=audience, user=None
    )
    prices = dict(zip([trend.pk for trend in trends], card_prices, strict=True))
    sections = [_section(entry, prices, audience.locale) for entry in screen.sections]
    return JsonResponse({"data": {"homeScreen": {"id": "home", "sections": sections}}})


urlpatterns = [*project_urlpatterns, path("bench/home", bench_home)]
