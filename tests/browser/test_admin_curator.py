"""A curator in a real browser (Playwright driving Debian's chromium) publishes and retires a trend in Django
admin; the next `homeScreen` query shows it where the section rules put it, then no longer does."""

from __future__ import annotations

import pytest

from apps.trends.models import Trend, TrendChange, TrendStatus
from tests.apps.trends.helpers import make_category, make_section, make_trend, png_bytes
from tests.browser.driver import PASSWORD, assert_styled, needs_chromium, screenshot
from tests.fixtures.live import http_graphql

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True), needs_chromium]

HOME = """{ homeScreen(platform: IOS, appVersion: "2.0", locale: "en") { sections { __typename
  ... on HomeSection { title }
  ... on TrendCarouselSection { trends { slug title coverImage { url width height } } } } } }"""


def carousels(url: str) -> dict[str, list[str]]:
    sections = http_graphql(url, HOME)["data"]["homeScreen"]["sections"]
    return {s["title"]: [t["slug"] for t in s.get("trends", [])] for s in sections}


def test_a_curator_publishes_and_retires_a_trend_in_the_browser(asgi_server, browser, curator, tmp_path):
    dance = make_category("dance", "Dance")
    older = make_trend(category=dance, slug="older", published_hours_ago=30, trending_score=0.9)
    make_section("carousel", title="New today", sort_order=1, source="new_today")
    make_section("carousel", title="Trending now", sort_order=2, source="trending")
    base = asgi_server.url
    before = carousels(base)
    assert before == {"Trending now": [older.slug]}  # nothing new today yet: that section is left out
    cover = tmp_path / "cover.png"
    cover.write_bytes(png_bytes((90, 160), color="#ff3366"))

    # 1. Sign in to admin.
    browser.fresh()

    def sign_in(page) -> None:
        page.goto(f"{base}/admin/login/?next=/admin/trends/trend/add/")
        page.fill("#id_username", curator.email)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/trends/trend/add/")

    browser(sign_in)

    def submit_trend(template: str):
        def step(page) -> str:
            page.fill("#id_slug", "moon-walk")
            page.fill("#id_title", "Moon Walk")
            page.select_option("#id_category", label="Dance")
            page.fill("#id_tags", "space, slow-mo")
            page.select_option("#id_status", "live")
            page.fill("#id_prompt_template", template)
            page.fill("#id_durations", "5, 8")
            page.select_option("#id_preferred_model_route", "tiny-wan")
            page.set_input_files("#id_cover_upload", str(cover))
            page.click("input[name=_save]")
            page.wait_for_load_state()
            errors = page.locator(".errorlist")
            return errors.first.inner_text() if errors.count() else page.locator(".messagelist").inner_text()

        return step

    # 2. A broken prompt template cannot go live: the form says why, and nothing is saved.
    error = browser(submit_trend("{subject} walking on the moon in {gravity}"))
    assert "cannot be live yet" in error and "unknown slots: {gravity}" in error
    assert not Trend.objects.filter(slug="moon-walk").exists()

    # 3. Fixed, it is saved live, and the list shows its cover, served from storage.
    message = browser(submit_trend("{subject} moonwalking on the moon, {movement}, {user_prompt}"))
    assert "was added successfully" in message
    trend = Trend.objects.get(slug="moon-walk")
    assert trend.status == TrendStatus.LIVE
    cover_url = f"/media/{trend.cover_image_key}"

    def thumbnail(page) -> tuple[int, int, tuple[str, str]]:
        image = page.locator(f'img[src="{cover_url}"]')
        return (
            image.count(),
            page.evaluate("src => fetch(src).then(r => r.status)", cover_url),
            (image.get_attribute("width"), image.get_attribute("height")),  # its box before it loads
        )

    assert browser(thumbnail) == (1, 200, ("36", "64"))
    browser(assert_styled)
    browser(screenshot(tmp_path, "trend-list"))
    print(f"\ntrend list screenshot: {tmp_path / 'trend-list.png'}")

    # 4. The next homeScreen shows it where the rules put it: alone under "New today", and in trending.
    after = carousels(base)
    assert after["New today"] == ["moon-walk"]
    assert set(after["Trending now"]) == {"older", "moon-walk"}
    card = next(
        t
        for s in http_graphql(base, HOME)["data"]["homeScreen"]["sections"]
        for t in s.get("trends", [])
        if t["slug"] == "moon-walk"
    )
    assert (card["coverImage"]["width"], card["coverImage"]["height"]) == (90, 160)

    # 5. Retired with the bulk action, it disappears from every section.
    def retire(page) -> str:
        page.check(f'input[name=_selected_action][value="{trend.pk}"]')
        page.select_option("select[name=action]", "retire_selected")
        page.click("button[name=index]")
        page.wait_for_load_state()
        return page.locator(".messagelist").inner_text()

    assert "1 retired." in browser(retire)
    assert carousels(base) == before
    history = TrendChange.objects.filter(trend_slug="moon-walk").order_by("created_at", "id")
    assert list(history.values_list("action", "actor")) == [
        ("published", "curator@example.com"),
        ("retired", "curator@example.com"),
    ]

    # 6. The admin preview shows what an app gets: "New today" is empty again, so one carousel.
    def preview(page) -> int:
        page.goto(f"{base}/admin/trends/feedsection/preview/?platform=ANDROID&app_version=2.0&locale=en")
        return page.locator('[data-section-type="carousel"]').count()

    assert browser(preview) == 1
