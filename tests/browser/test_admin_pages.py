"""The admin pages built last (moderation terms and decisions, generation reviews, the cost per output
minute report, organizations with their API keys, webhook endpoints and deliveries, retention records) in
a real browser: each is styled by this server's static files and photographed (look at the pictures);
the curator role gets 403 on every one of them; a long list comes in pages a staff member can walk."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import User
from apps.generations.models import GenerationReview, RetentionRecord
from apps.moderation.models import BlockedTerm, ModerationDecision
from apps.organizations.models import ApiKey, WebhookDelivery, WebhookEndpoint
from apps.organizations.services import api_key_secret_new, organization_create
from apps.organizations.webhooks import webhook_secret_new
from apps.storage.backends import get_storage
from tests.apps.generations.test_cost_report import _generation, _route
from tests.apps.trends.helpers import png_bytes
from tests.browser.driver import PASSWORD, assert_styled, needs_chromium, screenshot, sign_in

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True), needs_chromium]

# The pages, by the name of their screenshot.
PAGES = {
    "blocked-terms": "/admin/moderation/blockedterm/",
    "moderation-decisions": "/admin/moderation/moderationdecision/",
    "generation-reviews": "/admin/generations/generationreview/",
    "cost-per-output-minute": "/admin/generations/costreport/?days=7",
    "organizations": "/admin/organizations/organization/",
    "api-keys": "/admin/organizations/apikey/",
    "webhook-endpoints": "/admin/organizations/webhookendpoint/",
    "webhook-deliveries": "/admin/organizations/webhookdelivery/",
    "retention-records": "/admin/generations/retentionrecord/",
}


# The columns a list must show without scrolling at a laptop's width (1280 px, admin's sidebar open).
MUST_SEE = {
    "generation-reviews": {"preview", "status", "top_scores", "category_list"},
    "moderation-decisions": {"subject", "decision", "category_list"},
    "webhook-endpoints": {"url", "enabled", "disabled_reason"},
    "webhook-deliveries": {"event_type", "status", "attempts"},
}
CUT_OFF_COLUMNS = """() => {
  const box = document.querySelector('#changelist .results');
  if (!box) return [];
  const edge = box.getBoundingClientRect().right;
  return [...box.querySelectorAll('thead th')]
    .filter(th => th.getBoundingClientRect().right > edge + 1)
    .map(th => [...th.classList].find(c => c.startsWith('column-')).slice('column-'.length));
}"""


@pytest.fixture
def staff() -> User:
    return User.objects.create_superuser(email="ops@example.com", password=PASSWORD)


def _a_week_of_records(staff: User) -> dict[str, str]:
    """A row or two on every page, as a week of running gives them; returns the pages of single records."""
    owner = User.objects.create_user(email="maker@example.com", password=PASSWORD)
    term = BlockedTerm(term="Deep Fake", category="PUBLIC_FIGURE", locale="en", note="store rules")
    term.full_clean()
    term.save()
    _route("wan2.2-ti2v-5b", "2.40")
    now = timezone.now()
    for day in range(7):
        timings = {"load": 2.0, "denoise": 60.0 + day, "decode": 6.0}
        made = _generation(
            owner,
            route="wan2.2-ti2v-5b",
            tier="STANDARD",
            finished_at=now - timedelta(days=day),
            timings=timings,
            seconds=5.0,
            credits=4,
        )
    flagged = _generation(
        owner,
        route="wan2.2-ti2v-5b",
        tier="STANDARD",
        finished_at=now,
        timings={},
        seconds=5.0,
        credits=4,
        status="IN_REVIEW",
    )
    poster = f"generations/{owner.pk}/{flagged.pk}/poster.png"
    get_storage().write(poster, png_bytes((90, 160), color="#3366ff"), content_type="image/png")
    review = GenerationReview.objects.create(
        generation=flagged,
        outputs={
            "poster": {"key": poster},
            "video": {"key": f"generations/{owner.pk}/{flagged.pk}/video.mp4"},
        },
        categories=["nsfw"],
        scores={"nsfw": 0.91, "violence": 0.12, "normal": 0.05},
    )
    ModerationDecision.objects.create(
        subject="OUTPUT",
        decision="FLAGGED",
        object_ref=str(flagged.pk),
        user=owner,
        categories=["nsfw"],
        scores={"nsfw": 0.91},
    )
    ModerationDecision.objects.create(
        subject="PROMPT", decision="REFUSED", user=owner, categories=["PUBLIC_FIGURE"], detail="deep fake"
    )
    acme = organization_create(name="Acme Studios")
    _, prefix, secret_hash = api_key_secret_new()
    ApiKey.objects.create(organization=acme, name="render farm", prefix=prefix, secret_hash=secret_hash)
    endpoint = WebhookEndpoint.objects.create(
        organization=acme,
        url="https://hooks.acme.example/diffuse",
        secret=webhook_secret_new(),
        enabled=False,
        failed_deliveries_in_a_row=5,
        disabled_reason="5 deliveries in a row failed (last: HTTP 503)",
    )
    WebhookDelivery.objects.create(
        endpoint=endpoint,
        message_id=f"msg_{uuid.uuid4().hex}",
        event_type="generation.succeeded",
        payload={"id": str(made.pk)},
        status="failed",
        attempts=9,
        last_status_code=503,
        last_error="HTTP 503 Service Unavailable",
    )
    RetentionRecord.objects.create(
        kind="INPUT",
        user_ref=owner.pk,
        upload_ref=uuid.uuid4(),
        term_days=30,
        keys=[f"uploads/{owner.pk}/selfie.jpg"],
    )
    return {
        "generation-review": f"/admin/generations/generationreview/{review.pk}/change/",
        "organization": f"/admin/organizations/organization/{acme.pk}/change/",
        "blocked-term": f"/admin/moderation/blockedterm/{term.pk}/change/",
    }


def _visit(base: str, path: str):
    def step(page) -> dict:
        response = page.goto(f"{base}{path}")
        page.wait_for_load_state("load")
        # Posters are loading="lazy": one below the fold is not fetched by "load". Ask for each now and
        # wait until it decodes (or fails, which is what the count below is for).
        page.eval_on_selector_all(
            "#content img",
            "images => Promise.all(images.map(i => {"
            " i.loading = 'eager'; return i.decode().catch(() => null); }))",
        )
        return {
            "status": response.status,
            "title": page.locator("#content h1").first.inner_text(),
            "broken_images": page.eval_on_selector_all(
                "#content img", "images => images.filter(i => !i.complete || !i.naturalWidth).length"
            ),
            # Nothing wider than the window: a table or chart that overflows is cut off on a laptop.
            "overflow": page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth"),
            # A list's columns past the edge of its box (admin scrolls the table sideways within it).
            "cut_off": page.evaluate(CUT_OFF_COLUMNS),
        }

    return step


def test_staff_see_every_new_page_styled(asgi_server, browser, screens, staff):
    base = asgi_server.url
    singles = _a_week_of_records(staff)
    browser.fresh()
    browser(sign_in(base, staff.email))
    for name, path in {**PAGES, **singles}.items():
        seen = browser(_visit(base, path))
        assert seen["status"] == 200, (name, seen)
        assert seen["broken_images"] == 0, (name, seen)
        assert seen["overflow"] <= 0, (name, seen)
        assert not set(seen["cut_off"]) & MUST_SEE.get(name, set()), (name, seen)
        browser(assert_styled)
        browser(screenshot(screens, name))


def test_a_curator_gets_403_on_every_new_page(asgi_server, browser, curator):
    base = asgi_server.url
    browser.fresh()
    browser(sign_in(base, curator.email))
    statuses = {
        name: browser(lambda page, path=path: page.goto(f"{base}{path}").status)
        for name, path in PAGES.items()
    }
    assert statuses == dict.fromkeys(PAGES, 403)

    def index(page) -> list[str]:
        page.goto(f"{base}/admin/")
        return page.locator("#content-main .module caption").all_inner_texts()

    assert [name.strip().lower() for name in browser(index)] == ["trends and home screen"]


def test_a_long_list_comes_in_pages(asgi_server, browser, screens, staff):
    base = asgi_server.url
    ModerationDecision.objects.bulk_create(
        ModerationDecision(subject="PROMPT", decision="REFUSED", detail=f"prompt {n}") for n in range(120)
    )
    browser.fresh()
    browser(sign_in(base, staff.email, PAGES["moderation-decisions"]))

    def listing(page) -> dict:
        return {
            "rows": page.locator("#result_list tbody tr").count(),
            "paginator": " ".join(page.locator("p.paginator").inner_text().split()),
        }

    first = browser(listing)
    assert first["rows"] == 50
    assert first["paginator"].startswith("1 2 3") and "120 moderation decisions" in first["paginator"]
    browser(assert_styled)
    browser(screenshot(screens, "long-list-page-1"))

    def to_page(number: str):
        def step(page) -> None:
            page.locator("p.paginator a", has_text=number).click()
            page.wait_for_url(f"**?p={number}")

        return step

    browser(to_page("3"))
    assert browser(listing)["rows"] == 20  # 50 + 50 + 20
    browser(to_page("2"))
    assert browser(listing)["rows"] == 50
    browser(assert_styled)
    browser(screenshot(screens, "long-list-page-2"))
