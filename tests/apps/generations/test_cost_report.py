"""Cost per output minute: the selector over real rows on PostgreSQL, and the admin page a staff member reads.

GPU seconds are the GPU-held stages of each succeeded job's recorded timings (load + denoise + decode),
priced at the route's cost per GPU-hour and divided by the minutes of video delivered, per day, route and
tier, with the credits charged beside them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import User
from apps.generations.models import Generation, GenerationStatus, ModelRoute
from apps.generations.selectors import route_costs_by_day

pytestmark = [pytest.mark.services, pytest.mark.django_db]

REPORT = reverse("admin:generations_costreport_changelist")
DAY1 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
DAY2 = datetime(2026, 11, 3, 23, 30, tzinfo=UTC)


def _route(name: str, per_hour: str) -> ModelRoute:
    route, _ = ModelRoute.objects.update_or_create(
        name=name,
        defaults=dict(
            family="tiny-wan",
            checkpoint="",
            device="cpu",
            width=48,
            height=80,
            fps=8,
            frames=41,
            steps=2,
            cost_per_gpu_hour=Decimal(per_hour),
        ),
    )
    return route


def _generation(
    owner, *, route: str, tier: str, finished_at, timings: dict, seconds: float, credits: int, **extra
):
    return Generation.objects.create(
        owner=owner,
        aspect_ratio="9:16",
        duration_seconds=5,
        quality=tier,
        lane="INSTANT",
        seed=1,
        quoted_credits=credits,
        route_name=route,
        width=48,
        height=80,
        num_frames=41,
        status=extra.pop("status", GenerationStatus.SUCCEEDED),
        credits_charged=credits,
        video_duration_seconds=seconds,
        timings=timings,
        queued_at=finished_at - timedelta(minutes=2),
        finished_at=finished_at,
        idempotency_key=str(uuid.uuid4()),
        request_hash="0" * 64,
        **extra,
    )


@pytest.fixture
def owner() -> User:
    return User.objects.create_user("costs@example.com", "a-long-test-password-42")


def test_cost_per_output_minute_by_day_route_and_tier(owner):
    _route("cost-a", "3.60")  # one GPU second costs $0.001
    _route("cost-b", "7.20")
    timings = {"load": 1.0, "denoise": 50.0, "decode": 9.0, "encode": 30.0, "upload": 5.0, "total": 95.0}
    # Day 1, cost-a STANDARD: two videos of 30 s (one minute), 60 GPU seconds each: $0.12 a minute
    _generation(
        owner, route="cost-a", tier="STANDARD", finished_at=DAY1, timings=timings, seconds=30.0, credits=4
    )
    _generation(
        owner, route="cost-a", tier="STANDARD", finished_at=DAY1, timings=timings, seconds=30.0, credits=4
    )
    # Day 1, cost-a DRAFT: only denoise recorded
    _generation(
        owner,
        route="cost-a",
        tier="DRAFT",
        finished_at=DAY1,
        timings={"denoise": 6.0},
        seconds=6.0,
        credits=1,
    )
    # Day 2 (late UTC evening), cost-b CINEMA at twice the rate
    _generation(
        owner, route="cost-b", tier="CINEMA", finished_at=DAY2, timings=timings, seconds=60.0, credits=10
    )
    # Not counted: a failed job, one outside the period, one on a route with no rate row (cost 0)
    _generation(
        owner,
        route="cost-a",
        tier="STANDARD",
        finished_at=DAY1,
        timings=timings,
        seconds=30.0,
        credits=0,
        status=GenerationStatus.FAILED,
    )
    _generation(
        owner,
        route="cost-a",
        tier="STANDARD",
        finished_at=DAY1 - timedelta(days=5),
        timings=timings,
        seconds=30.0,
        credits=4,
    )
    _generation(owner, route="gone", tier="DRAFT", finished_at=DAY2, timings=timings, seconds=60.0, credits=2)

    rows = route_costs_by_day(since=DAY1.replace(hour=0), until=DAY2 + timedelta(hours=1))

    table = [
        (
            r.day.isoformat(),
            r.route,
            r.tier,
            r.jobs,
            r.gpu_seconds,
            r.output_minutes,
            r.cost_usd,
            r.credits_earned,
        )
        for r in rows
    ]
    assert table == [
        ("2026-11-02", "cost-a", "DRAFT", 1, 6.0, 0.1, Decimal("0.0060"), 1),
        ("2026-11-02", "cost-a", "STANDARD", 2, 120.0, 1.0, Decimal("0.1200"), 8),
        ("2026-11-03", "cost-b", "CINEMA", 1, 60.0, 1.0, Decimal("0.1200"), 10),
        ("2026-11-03", "gone", "DRAFT", 1, 60.0, 1.0, Decimal("0.0000"), 2),
    ]
    assert [r.cost_per_output_minute for r in rows] == [
        Decimal("0.0600"),
        Decimal("0.1200"),
        Decimal("0.1200"),
        Decimal("0.0000"),
    ]
    assert rows[1].credits_per_output_minute == 8.0


def test_staff_read_the_cost_report_with_its_charts(client, owner):
    _route("cost-a", "3.60")
    now = timezone.now()
    timings = {"load": 1.0, "denoise": 50.0, "decode": 9.0}
    _generation(
        owner, route="cost-a", tier="STANDARD", finished_at=now, timings=timings, seconds=30.0, credits=4
    )

    assert client.get(REPORT).status_code == 302  # to the admin login
    staff = User.objects.create_superuser("staff@example.com", "a-long-test-password-42")
    client.force_login(staff)
    index = client.get(reverse("admin:index")).content.decode()
    assert REPORT in index  # linked from the admin index

    page = client.get(REPORT, {"days": 7})
    html = page.content.decode()
    assert page.status_code == 200
    assert html.count("<svg xmlns='http://www.w3.org/2000/svg' width") == 2  # the two charts
    assert "cost-a STANDARD" in html
    assert "$0.1200/min" in html and "8.0 credits/min" in html
    assert "<script" not in html.split('id="content-main"')[1]  # charts drawn on the server, no scripts
    assert client.get(REPORT, {"days": "not-a-number"}).status_code == 200


def test_staff_without_the_view_permission_get_403_and_no_figures(client, owner):
    _route("cost-a", "3.60")
    timings = {"load": 1.0, "denoise": 50.0, "decode": 9.0}
    _generation(
        owner,
        route="cost-a",
        tier="STANDARD",
        finished_at=timezone.now(),
        timings=timings,
        seconds=30.0,
        credits=4,
    )
    clerk = User.objects.create_user("clerk@example.com", "a-long-test-password-42", is_staff=True)
    client.force_login(clerk)
    page = client.get(REPORT, {"days": 7})
    assert page.status_code == 403
    assert b"cost-a" not in page.content


def test_nobody_adds_changes_or_deletes_a_route_through_the_cost_report(client):
    route = _route("cost-a", "3.60")
    staff = User.objects.create_superuser("staff@example.com", "a-long-test-password-42")
    client.force_login(staff)

    add = reverse("admin:generations_costreport_add")
    change = reverse("admin:generations_costreport_change", args=[route.pk])
    delete = reverse("admin:generations_costreport_delete", args=[route.pk])
    assert client.get(add).status_code == 403
    assert client.post(add, {"name": "cost-new"}).status_code == 403
    assert client.post(change, {"name": "renamed", "cost_per_gpu_hour": "9"}).status_code == 403
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert client.get(change).status_code == 200  # staff may read a route here, read-only

    route.refresh_from_db()
    assert (route.name, route.cost_per_gpu_hour) == ("cost-a", Decimal("3.60"))
    assert not ModelRoute.objects.filter(name__in=["cost-new", "renamed"]).exists()
