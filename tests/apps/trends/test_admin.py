"""Curating in Django admin: publish checks with clear messages, bulk actions, the curator group, preview."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from apps.accounts.models import User
from apps.trends.curators import CURATOR_GROUP, curator_group_ensure
from apps.trends.models import ChangeAction, Trend, TrendChange, TrendStatus
from tests.apps.trends.helpers import make_category, make_section, make_trend, png_bytes

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/trends/trend/"


@pytest.fixture
def curator(client):
    curator_group_ensure()
    user = User.objects.create_user(
        email="curator@example.com", password="a-long-test-password-42", is_staff=True
    )
    user.groups.add(Group.objects.get(name=CURATOR_GROUP))
    client.force_login(user)
    return user


def _form(category, **overrides) -> dict:
    data = {
        "slug": "moon-walk",
        "title": "Moon Walk",
        "subtitle": "",
        "category": str(category.pk),
        "tags": "space, slow-mo",
        "status": "draft",
        "sort_weight": "0",
        "prompt_template": "{subject} moonwalking on the moon, {movement}",
        "negative_prompt": "",
        "requires": "SELFIE",
        "camera_movement": "orbit",
        "movement_strength": "0.5",
        "aspect_ratios": ["PORTRAIT_9_16"],
        "default_aspect_ratio": "PORTRAIT_9_16",
        "durations": "5, 8",
        "default_duration_seconds": "5",
        "preferred_model_route": "tiny-wan",
        "default_quality": "STANDARD",
        "price_draft": "1",
        "price_standard": "4",
        "price_cinema": "10",
        "locales": "",
        "min_app_version": "",
        "changes-TOTAL_FORMS": "0",
        "changes-INITIAL_FORMS": "0",
        "changes-MIN_NUM_FORMS": "0",
        "changes-MAX_NUM_FORMS": "0",
    }
    data.update(overrides)
    return data


def _upload(name="cover.png"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, png_bytes((90, 160)), content_type="image/png")


def test_a_curator_creates_a_live_trend_with_an_uploaded_cover(
    client, curator, django_capture_on_commit_callbacks
):
    dance = make_category("dance")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/trends/trend/add/", _form(dance, status="live", cover_upload=_upload())
        )
    assert response.status_code == 302, response.content.decode()[:3000]
    trend = Trend.objects.get(slug="moon-walk")
    assert trend.status == TrendStatus.LIVE
    assert trend.published_at is not None
    assert (trend.cover_width, trend.cover_height) == (90, 160)
    assert trend.tags == ["space", "slow-mo"]
    assert trend.durations == [5, 8]
    assert client.get(f"/media/{trend.cover_image_key}").status_code == 200
    change = TrendChange.objects.get(trend=trend)
    assert (change.action, change.actor) == (ChangeAction.PUBLISHED, "curator@example.com")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prompt_template": "{subject} dancing {oops"}, "does not parse"),
        ({"prompt_template": "{subject} in {weather}"}, "unknown slots: {weather}"),
        ({"prompt_template": "a dancer in the rain"}, "needs the {subject} slot"),
        ({"preferred_model_route": "tiny-wan"}, "cover image is missing"),
    ],
)
def test_publishing_is_blocked_with_a_clear_message(client, curator, overrides, message):
    dance = make_category("dance")
    data = _form(dance, status="live", **overrides)
    if "cover image is missing" not in message:
        data["cover_upload"] = _upload()
    response = client.post("/admin/trends/trend/add/", data)
    assert response.status_code == 200  # the form again, with the error
    assert "cannot be live yet" in response.content.decode()
    assert message in response.content.decode()
    assert not Trend.objects.exists()


def test_an_unknown_model_route_blocks_the_bulk_publish_action(client, curator):
    dance = make_category("dance")
    broken = make_trend(
        category=dance, slug="broken", status=TrendStatus.DRAFT, preferred_model_route="sora-9"
    )
    fine = make_trend(category=dance, slug="fine", status=TrendStatus.DRAFT)
    response = client.post(
        CHANGELIST, {"action": "publish_selected", "_selected_action": [broken.pk, fine.pk]}, follow=True
    )
    text = response.content.decode()
    assert "1 published." in text
    assert "The model route &#x27;sora-9&#x27; is unknown" in text
    broken.refresh_from_db()
    fine.refresh_from_db()
    assert (broken.status, fine.status) == (TrendStatus.DRAFT, TrendStatus.LIVE)
    assert list(TrendChange.objects.values_list("trend_slug", "action")) == [("fine", "published")]


def test_bulk_retire_and_pin_record_who_did_it(client, curator):
    dance = make_category("dance")
    one, two = make_trend(category=dance, slug="one"), make_trend(category=dance, slug="two")
    client.post(CHANGELIST, {"action": "retire_selected", "_selected_action": [one.pk]})
    client.post(CHANGELIST, {"action": "pin_selected", "_selected_action": [two.pk]})
    one.refresh_from_db()
    two.refresh_from_db()
    assert one.status == TrendStatus.RETIRED and one.retired_at is not None
    assert two.pinned
    assert set(TrendChange.objects.values_list("trend_slug", "action", "actor")) == {
        ("one", "retired", "curator@example.com"),
        ("two", "pinned", "curator@example.com"),
    }


def test_the_trend_list_shows_media_and_engagement(client, curator):
    dance = make_category("dance")
    make_trend(
        category=dance,
        slug="rain",
        preview_video_key="trends/previews/rain.mp4",
        generations_started=10,
        generations_succeeded=9,
        shares=7,
        trending_score=0.1234,
    )
    text = client.get(CHANGELIST).content.decode()
    assert '<img src="/media/trends/covers/rain.png"' in text
    assert '<video src="/media/trends/previews/rain.mp4"' in text
    assert "90%" in text  # success rate
    assert "0.1234" in text


def test_a_curator_edits_trends_and_sections_but_not_users_or_credits(client, curator):
    assert client.get(CHANGELIST).status_code == 200
    assert client.get("/admin/trends/feedsection/").status_code == 200
    assert client.get("/admin/trends/trendchange/").status_code == 200
    assert client.get("/admin/accounts/user/").status_code == 403
    assert client.get("/admin/credits/wallet/").status_code == 403
    assert client.get("/admin/credits/creditentry/").status_code == 403
    permissions = set(curator.get_all_permissions())
    assert "trends.change_trend" in permissions
    assert "trends.change_trendchange" not in permissions
    assert not {p for p in permissions if not p.startswith("trends.")}


def test_the_trend_audit_trail_is_read_only_even_for_a_superuser(client):
    dance = make_category("dance")
    trend = make_trend(category=dance, slug="one")
    client.force_login(User.objects.create_superuser("root@example.com", "a-long-test-password-42"))
    client.post(CHANGELIST, {"action": "retire_selected", "_selected_action": [trend.pk]})
    change = TrendChange.objects.get(trend=trend)

    assert client.get("/admin/trends/trendchange/").status_code == 200
    assert client.get("/admin/trends/trendchange/add/").status_code == 403
    assert client.post(f"/admin/trends/trendchange/{change.pk}/change/", {"reason": "x"}).status_code == 403
    assert client.post(f"/admin/trends/trendchange/{change.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.get("/admin/trends/rotationrun/add/").status_code == 403
    change.refresh_from_db()
    assert change.reason != "x"


def test_the_preview_page_shows_the_screen_an_app_would_get(client, curator):
    dance = make_category("dance")
    rain = make_trend(category=dance, slug="rain")
    make_section("hero", title="Featured", sort_order=1, items=[rain])
    make_section("soul_id_prompt", title="Make it you", sort_order=2)
    new_app = client.get("/admin/trends/feedsection/preview/", {"platform": "IOS", "app_version": "2.0"})
    assert new_app.status_code == 200
    text = new_app.content.decode()
    assert 'data-section-type="hero"' in text
    assert 'data-slug="rain"' in text
    assert 'data-section-type="soul_id_prompt"' in text
    old_app = client.get("/admin/trends/feedsection/preview/", {"platform": "IOS", "app_version": "1.0"})
    old = old_app.content.decode()
    assert 'data-section-type="soul_id_prompt"' not in old
    assert "this app version cannot render Soul ID prompt (needs 1.5)" in old
    bad = client.get("/admin/trends/feedsection/preview/", {"platform": "IOS", "app_version": "v2"})
    assert "like 2.3.1" in bad.content.decode()
