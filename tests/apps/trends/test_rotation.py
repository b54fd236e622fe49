"""The rotation job (publish on time, decayed scores, retiring tired trends) and its scheduler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
from django.conf import settings as django_settings

from apps.core.queues import QUEUE_MAINTENANCE
from apps.trends import scheduler
from apps.trends.models import ChangeAction, RotationRun, Trend, TrendChange, TrendStatus
from apps.trends.rotation import trends_rotate
from apps.trends.services import stats_add
from tests.apps.trends.helpers import make_category, make_section, make_trend

pytestmark = pytest.mark.django_db

# Half past an hour, so every hourly bucket's middle is a whole number of hours old.
NOW = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)
NOW_HOUR = int(NOW.timestamp() // 3600)


@pytest.fixture
def dance(db):
    return make_category("dance")


def changes(slug: str) -> list[tuple[str, str]]:
    return list(
        TrendChange.objects.filter(trend_slug=slug)
        .order_by("created_at", "id")
        .values_list("action", "actor")
    )


def test_a_scheduled_trend_goes_live_on_time_once(dance):
    trend = make_trend(
        category=dance, slug="moon", status=TrendStatus.SCHEDULED, publish_at=NOW + timedelta(hours=1)
    )
    trends_rotate(now=NOW)
    trend.refresh_from_db()
    assert trend.status == TrendStatus.SCHEDULED
    trends_rotate(now=NOW + timedelta(hours=2))
    trend.refresh_from_db()
    assert (trend.status, trend.published_at) == (TrendStatus.LIVE, NOW + timedelta(hours=2))
    trends_rotate(now=NOW + timedelta(hours=2))  # again: nothing more happens
    assert changes("moon") == [(ChangeAction.PUBLISHED, TrendChange.AUTOMATIC)]
    record = TrendChange.objects.get(trend_slug="moon")
    assert "publish time 2026-11-20T13:30:00+00:00 came" in record.reason


def test_a_broken_scheduled_trend_goes_back_to_draft_with_the_reasons(dance):
    # Broken after it was scheduled: its route was removed from the known ones.
    make_trend(
        category=dance,
        slug="moon",
        status=TrendStatus.SCHEDULED,
        publish_at=NOW,
        preferred_model_route="gone",
    )
    trends_rotate(now=NOW)
    assert Trend.objects.get(slug="moon").status == TrendStatus.DRAFT
    assert changes("moon") == [(ChangeAction.PUBLISH_BLOCKED, TrendChange.AUTOMATIC)]
    record = TrendChange.objects.get(trend_slug="moon")
    assert "The model route 'gone' is unknown" in record.reason
    assert record.details["problems"] == [record.reason.split(": ", 1)[1]]


def test_a_live_trend_retires_at_its_retire_time(dance):
    make_trend(category=dance, slug="xmas", retire_at=NOW - timedelta(minutes=1))
    trends_rotate(now=NOW)
    trend = Trend.objects.get(slug="xmas")
    assert (trend.status, trend.retired_at) == (TrendStatus.RETIRED, NOW)
    assert changes("xmas") == [(ChangeAction.RETIRED, TrendChange.AUTOMATIC)]


def test_the_score_is_decayed_engagement_per_impression(dance, settings):
    settings.TRENDS_SCORE_HALF_LIFE_HOURS = 24
    settings.TRENDS_SCORE_PRIOR_IMPRESSIONS = 100
    settings.TRENDS_SCORE_PRIOR_RATE = 0.05
    settings.TRENDS_SCORE_SHARE_WEIGHT = 2
    fresh = make_trend(category=dance, slug="fresh")
    stale = make_trend(category=dance, slug="stale")
    quiet = make_trend(category=dance, slug="quiet")
    # The same engagement: now for one, a day (one half-life) ago for the other.
    stats_add({fresh.pk: {"impressions": 400, "generations_started": 40, "shares": 10}}, hour=NOW_HOUR)
    stats_add({stale.pk: {"impressions": 400, "generations_started": 40, "shares": 10}}, hour=NOW_HOUR - 24)
    # Outside the window: ignored.
    stats_add({quiet.pk: {"impressions": 10, "generations_started": 10}}, hour=NOW_HOUR - 24 * 8)
    trends_rotate(now=NOW)
    scores = dict(Trend.objects.values_list("slug", "trending_score"))
    assert scores["fresh"] == pytest.approx((40 + 2 * 10 + 0.05 * 100) / (400 + 100), abs=1e-6)
    assert scores["stale"] == pytest.approx(
        (0.5 * 40 + 2 * 0.5 * 10 + 0.05 * 100) / (0.5 * 400 + 100), abs=1e-6
    )
    assert scores["quiet"] == pytest.approx(0.05, abs=1e-6)  # no data: the prior
    assert scores["fresh"] > scores["stale"]

    settings.TRENDS_SCORE_HALF_LIFE_HOURS = 12  # configurable: a day is now two half-lives
    trends_rotate(now=NOW)
    stale.refresh_from_db()
    assert stale.trending_score == pytest.approx((0.25 * 60 + 5) / (0.25 * 400 + 100), abs=1e-6)


@pytest.fixture
def tired_settings(settings):
    settings.TRENDS_RETIRE_SCORE_THRESHOLD = 0.01
    settings.TRENDS_RETIRE_AFTER_HOURS = 48
    settings.TRENDS_RETIRE_MIN_AGE_HOURS = 72
    settings.TRENDS_RETIRE_MIN_IMPRESSIONS = 500
    settings.TRENDS_SCORE_PRIOR_IMPRESSIONS = 200
    settings.TRENDS_SCORE_PRIOR_RATE = 0.05
    return settings


def _shown_without_takers(*trends, hours=(0,)) -> None:
    for hour in hours:
        stats_add({t.pk: {"impressions": 5000} for t in trends}, hour=NOW_HOUR + hour)


def test_an_unpinned_trend_under_the_threshold_for_too_long_is_retired(dance, tired_settings):
    tired = make_trend(category=dance, slug="tired", published_at=NOW - timedelta(days=10))
    pinned = make_trend(category=dance, slug="pinned", published_at=NOW - timedelta(days=10), pinned=True)
    young = make_trend(category=dance, slug="young", published_at=NOW - timedelta(hours=10))
    _shown_without_takers(tired, pinned, young, hours=(0, 49))

    trends_rotate(now=NOW)
    tired.refresh_from_db()
    assert tired.status == TrendStatus.LIVE
    assert tired.below_threshold_since == NOW
    assert changes("tired") == [(ChangeAction.BELOW_THRESHOLD, TrendChange.AUTOMATIC)]

    trends_rotate(now=NOW + timedelta(hours=24))  # under, but not for 48 h yet
    assert Trend.objects.get(slug="tired").status == TrendStatus.LIVE

    trends_rotate(now=NOW + timedelta(hours=49))
    tired.refresh_from_db()
    assert tired.status == TrendStatus.RETIRED
    assert changes("tired") == [
        (ChangeAction.BELOW_THRESHOLD, TrendChange.AUTOMATIC),
        (ChangeAction.RETIRED, TrendChange.AUTOMATIC),
    ]
    retired = TrendChange.objects.get(trend_slug="tired", action=ChangeAction.RETIRED)
    assert "stayed under 0.01 since 2026-11-20T12:30:00+00:00" in retired.reason
    assert retired.details["score"] < 0.01
    # Pinned ones never retire automatically; young ones get their grace period.
    assert Trend.objects.get(slug="pinned").status == TrendStatus.LIVE
    assert Trend.objects.get(slug="young").status == TrendStatus.LIVE
    assert changes("pinned") == [] and changes("young") == []


def test_a_trend_that_recovers_is_not_retired(dance, tired_settings):
    trend = make_trend(category=dance, slug="comeback", published_at=NOW - timedelta(days=10))
    _shown_without_takers(trend)
    trends_rotate(now=NOW)
    assert Trend.objects.get(slug="comeback").below_threshold_since == NOW
    stats_add({trend.pk: {"impressions": 1000, "generations_started": 300}}, hour=NOW_HOUR + 10)
    trends_rotate(now=NOW + timedelta(hours=10))
    trends_rotate(now=NOW + timedelta(hours=60))
    trend.refresh_from_db()
    assert (trend.status, trend.below_threshold_since) == (TrendStatus.LIVE, None)
    assert [a for a, _ in changes("comeback")] == [ChangeAction.BELOW_THRESHOLD, ChangeAction.RECOVERED]


def test_two_runs_at_once_change_and_record_everything_once(dance, tired_settings):
    make_trend(category=dance, slug="moon", status=TrendStatus.SCHEDULED, publish_at=NOW)
    make_trend(category=dance, slug="xmas", retire_at=NOW)
    first, second = trends_rotate(now=NOW), trends_rotate(now=NOW)
    assert (first.published, first.retired) == (1, 1)
    assert (second.published, second.retired, second.rescored) == (0, 0, 0)
    assert TrendChange.objects.count() == 2
    assert RotationRun.objects.count() == 2


def test_the_rotation_refreshes_the_cached_home_screen(gql, dance):
    make_section("carousel", title="Trending", source="trending")
    make_trend(category=dance, slug="live-one")
    make_trend(category=dance, slug="soon", status=TrendStatus.SCHEDULED, publish_at=NOW)
    query = '{ homeScreen(platform: IOS, appVersion: "2.0") { sections { ... on TrendCarouselSection { trends { slug } } } } }'  # noqa: E501
    assert gql(query)["data"]["homeScreen"]["sections"] == [{"trends": [{"slug": "live-one"}]}]
    trends_rotate(now=NOW)
    slugs = {t["slug"] for t in gql(query)["data"]["homeScreen"]["sections"][0]["trends"]}
    assert slugs == {"live-one", "soon"}


# --- The scheduler ---------------------------------------------------------------------------------


def pending(queue: str) -> int:
    broker = dramatiq.get_broker()
    if hasattr(broker, "do_qsize"):  # Redis
        return broker.do_qsize(queue)
    return broker.queues[queue].qsize() if queue in broker.queues else 0


@pytest.fixture
def clean_queue():
    broker = dramatiq.get_broker()
    broker.declare_queue(QUEUE_MAINTENANCE)
    broker.flush(QUEUE_MAINTENANCE)
    yield
    broker.flush(QUEUE_MAINTENANCE)


def test_schedulers_enqueue_the_rotation_once_per_interval(settings, clean_queue):
    settings.TRENDS_ROTATION_INTERVAL_SECONDS = 300
    start = 1_800_000_000.0  # a slot boundary (divisible by 300)
    # Three processes' schedulers ticking in the same slot: one message.
    assert [scheduler.tick(now=start + offset) for offset in (0.0, 1.5, 299.0)] == [True, False, False]
    assert pending(QUEUE_MAINTENANCE) == 1
    assert scheduler.tick(now=start + 300) is True  # the next slot
    assert pending(QUEUE_MAINTENANCE) == 2


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_the_enqueued_rotation_runs_on_a_backend_worker(django_worker):
    dance = make_category("dance")
    make_trend(category=dance, slug="due", status=TrendStatus.SCHEDULED, publish_at=datetime.now(UTC))
    assert scheduler.tick() is True
    dramatiq.get_broker().join(QUEUE_MAINTENANCE, timeout=30_000)
    django_worker.join()
    assert Trend.objects.get(slug="due").status == TrendStatus.LIVE
    assert RotationRun.objects.count() == 1
    assert changes("due") == [(ChangeAction.PUBLISHED, TrendChange.AUTOMATIC)]


@pytest.mark.services
def test_the_scheduler_process_enqueues_and_stops_cleanly(clean_queue):
    """`python -m apps.trends.scheduler` (services mode) enqueues on Redis and exits on SIGTERM."""
    from django.core.cache import cache

    interval = 2
    env = {**os.environ, "TRENDS_ROTATION_INTERVAL_SECONDS": str(interval)}
    process = subprocess.Popen(
        [sys.executable, "-m", "apps.trends.scheduler"],
        cwd=django_settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while pending(QUEUE_MAINTENANCE) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pending(QUEUE_MAINTENANCE) >= 2  # one per slot: the first at start, then every 2 s
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=15)[0]
    assert process.returncode == 0, output
    assert "trend rotation enqueued" in output
    slot = int(time.time() // interval)
    assert (
        cache.get(scheduler.slot_key(slot)) is not None or cache.get(scheduler.slot_key(slot - 1)) is not None
    )
