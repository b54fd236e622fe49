"""A staff member opens the cost per output minute page in a real browser (Playwright driving Debian's
chromium): the two server-drawn charts render as images and the table lists every route and tier. The page
is saved as a PNG (COST_REPORT_SCREENSHOT, else the test's tmp folder) for a person to look at."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from apps.accounts.models import User
from tests.apps.generations.test_cost_report import _generation, _route
from tests.browser.driver import PASSWORD, assert_styled, needs_chromium

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True), needs_chromium]


def _a_fortnight_of_generations(owner) -> None:
    _route("wan2.2-ti2v-5b", "2.40")
    _route("ltx-video-13b", "4.10")
    # One generation of each kind per calendar day (UTC), today's already finished: the page shows the last
    # 14 days up to now (noon, as this used to say, is in the future before 12:00 UTC).
    now = timezone.now()
    now = max(now - timedelta(minutes=1), now.replace(hour=0, minute=0, second=1, microsecond=0))
    for day in range(14):
        finished = now - timedelta(days=day)
        for tier, denoise, credits in (("DRAFT", 20.0, 1), ("STANDARD", 70.0 + 3 * day, 4)):
            timings = {"load": 2.0, "denoise": denoise, "decode": 6.0}
            _generation(
                owner,
                route="wan2.2-ti2v-5b",
                tier=tier,
                finished_at=finished,
                timings=timings,
                seconds=5.0,
                credits=credits,
            )
        if day % 2 == 0:
            timings = {"load": 3.0, "denoise": 140.0, "decode": 12.0}
            _generation(
                owner,
                route="ltx-video-13b",
                tier="CINEMA",
                finished_at=finished,
                timings=timings,
                seconds=8.0,
                credits=10,
            )


def test_staff_see_the_cost_report_charts_in_the_browser(asgi_server, browser, tmp_path):
    staff = User.objects.create_superuser("staff@example.com", PASSWORD)
    _a_fortnight_of_generations(staff)
    screenshot = Path(os.environ.get("COST_REPORT_SCREENSHOT") or tmp_path / "cost-report.png")
    base = asgi_server.url
    browser.fresh()

    def read_report(page) -> dict:
        page.set_viewport_size({"width": 1100, "height": 900})
        page.goto(f"{base}/admin/login/?next=/admin/")
        page.fill("#id_username", staff.email)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/")
        page.click("text=Cost per output minute")  # linked from the admin index
        page.select_option("select[name=days]", "14")
        page.click("input[value=Show]")
        page.wait_for_url("**days=14")
        charts = page.locator(".cost-chart svg")
        boxes = [charts.nth(i).bounding_box() for i in range(charts.count())]
        assert_styled(page)  # admin's stylesheet, served by this server, applied
        page.screenshot(path=str(screenshot), full_page=True)
        return {"boxes": boxes, "rows": page.locator("#cost-table tbody tr").count()}

    seen = browser(read_report)
    assert len(seen["boxes"]) == 2
    assert all(box["width"] > 500 and box["height"] > 100 for box in seen["boxes"])  # drawn, not empty
    assert seen["rows"] == 14 * 2 + 7  # wan DRAFT and STANDARD every day, ltx CINEMA every other day
    assert screenshot.stat().st_size > 10_000
