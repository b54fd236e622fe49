"""The project's URLs plus GET /bench/home: the home screen as plain Django JSON (bench/trends_home.py).

Same data through the same selector (`home_screen_get`, so cached exactly when GraphQL's is), same fields
as the benchmark's GraphQL query, serialized by hand: the difference measured is what GraphQL costs.
"""

from __future__ import annotations

import base64

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse
from django.urls import path

from apps.trends.media import media_url
from apps.trends.selectors import audience_parse, home_screen_get
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


def _trend(trend) -> dict:
    url = media_url(trend.cover_image_key)
    return {
        "id": base64.b64encode(f"Trend:{trend.pk}".encode()).decode(),
        "slug": trend.slug,
        "title": trend.title,
        "priceCredits": trend.price_for(trend.default_quality),
        "coverImage": url and {"url": url, "width": trend.cover_width, "height": trend.cover_height},
        "category": {"slug": trend.category.slug, "title": trend.category.title},
    }


def _section(entry) -> dict:
    out = {"__typename": TYPENAMES[entry.section_type], "id": entry.id, "title": entry.title}
    if entry.section_type in ("hero", "carousel", "grid"):
        out["trends"] = [_trend(t) for t in entry.trends]
    elif entry.section_type == "category_chips":
        out["categories"] = [{"slug": c.slug, "title": c.title} for c in entry.categories]
    return out


async def bench_home(request: HttpRequest) -> JsonResponse:
    audience = audience_parse(
        platform=request.GET["platform"],
        app_version=request.GET["appVersion"],
        locale=request.GET.get("locale"),
    )
    screen = await sync_to_async(home_screen_get)(audience=audience, user=None)
    return JsonResponse(
        {"data": {"homeScreen": {"id": "home", "sections": [_section(entry) for entry in screen.sections]}}}
    )


urlpatterns = [*project_urlpatterns, path("bench/home", bench_home)]
