"""The rotation job: publish on time, rescore with time decay, retire what stays tired.

Idempotent: each state change is a compare-and-set (`filter(status=...).update(...)`), recorded only when
it changed a row, so two runs at once (or a redelivered message) change and record everything once.

The trending score of a trend is its decayed engagement rate:

    score = (G + share_weight * S + prior_rate * prior_impressions) / (I + prior_impressions)

where G, S and I are the generations started, shares and impressions of the last `TRENDS_SCORE_WINDOW_HOURS`,
each hour weighted by 0.5 ** (age in hours / half-life). The prior keeps a trend with few impressions near
`prior_rate` instead of swinging on a handful of events; a new trend starts there.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import ExpressionWrapper, F, FloatField, Sum, Value
from django.db.models.functions import Cast, Power
from django.utils import timezone

from .cache import screen_cache_invalidate
from .models import ChangeAction, RotationRun, Trend, TrendChange, TrendStat, TrendStatus
from .services import trend_publish_problems

logger = logging.getLogger(__name__)


@dataclass
class RotationResult:
    published: int = 0
    blocked: int = 0
    retired: int = 0
    rescored: int = 0
    seconds: float = 0.0


def _record(trend: Trend, action: str, reason: str, **details) -> None:
    TrendChange.objects.create(
        trend=trend,
        trend_slug=trend.slug,
        action=action,
        reason=reason,
        actor=TrendChange.AUTOMATIC,
        details=details,
    )


def publish_due(now: datetime) -> tuple[int, int]:
    """Scheduled trends whose time has come go live; a broken one goes back to draft, with the reasons."""
    published = blocked = 0
    for trend in Trend.objects.filter(status=TrendStatus.SCHEDULED, publish_at__lte=now).order_by(
        "publish_at"
    ):
        problems = trend_publish_problems(trend=trend)
        with transaction.atomic():
            due = Trend.objects.filter(pk=trend.pk, status=TrendStatus.SCHEDULED, publish_at__lte=now)
            if problems:
                if due.update(status=TrendStatus.DRAFT, updated_at=now):
                    _record(
                        trend,
                        ChangeAction.PUBLISH_BLOCKED,
                        "Its publish time came but it cannot go live: " + " ".join(problems),
                        problems=problems,
                        publish_at=trend.publish_at.isoformat(),
                    )
                    blocked += 1
            elif due.update(
                status=TrendStatus.LIVE,
                published_at=now,
                retired_at=None,
                below_threshold_since=None,
                updated_at=now,
            ):
                _record(
                    trend,
                    ChangeAction.PUBLISHED,
                    f"Its publish time {trend.publish_at.isoformat()} came.",
                    publish_at=trend.publish_at.isoformat(),
                )
                published += 1
    return published, blocked


def retire_due(now: datetime) -> int:
    retired = 0
    for trend in Trend.objects.filter(status=TrendStatus.LIVE, retire_at__lte=now):
        with transaction.atomic():
            if Trend.objects.filter(pk=trend.pk, status=TrendStatus.LIVE, retire_at__lte=now).update(
                status=TrendStatus.RETIRED, retired_at=now, updated_at=now
            ):
                _record(
                    trend,
                    ChangeAction.RETIRED,
                    f"Its retire time {trend.retire_at.isoformat()} came.",
                    retire_at=trend.retire_at.isoformat(),
                )
                retired += 1
    return retired


def decayed_engagement(now: datetime) -> dict:
    """{trend_id: (impressions, generations, shares)}, decayed, for live trends (one aggregate query)."""
    now_hours = now.timestamp() / 3600
    half_life = float(settings.TRENDS_SCORE_HALF_LIFE_HOURS)
    oldest = int(now_hours - settings.TRENDS_SCORE_WINDOW_HOURS)

    # The middle of each hour's bucket is its age; weight = 0.5 ** (age / half-life). Every constant is cast
    # to double precision: PostgreSQL would otherwise do this arithmetic in (much slower) NUMERIC.
    def double(value: float):
        return Cast(Value(value), FloatField())

    weight = Power(double(0.5), (double(now_hours - 0.5) - F("hour")) / double(half_life))

    def decayed(column: str):
        return Sum(ExpressionWrapper(F(column) * weight, output_field=FloatField()))

    rows = (
        TrendStat.objects.filter(hour__gte=oldest, trend__status=TrendStatus.LIVE)
        .values("trend_id")
        .annotate(i=decayed("impressions"), g=decayed("generations_started"), s=decayed("shares"))
        .values_list("trend_id", "i", "g", "s")
    )
    return {trend_id: (i or 0.0, g or 0.0, s or 0.0) for trend_id, i, g, s in rows}


def score(impressions: float, generations: float, shares: float) -> float:
    prior_n = settings.TRENDS_SCORE_PRIOR_IMPRESSIONS
    engaged = generations + settings.TRENDS_SCORE_SHARE_WEIGHT * shares
    return (engaged + settings.TRENDS_SCORE_PRIOR_RATE * prior_n) / (impressions + prior_n)


def rescore_and_retire(now: datetime) -> tuple[int, int]:
    """Writes new scores; retires unpinned trends under the threshold for longer than allowed."""
    engagement = decayed_engagement(now)
    threshold = settings.TRENDS_RETIRE_SCORE_THRESHOLD
    grace = now - timedelta(hours=settings.TRENDS_RETIRE_MIN_AGE_HOURS)
    patience = timedelta(hours=settings.TRENDS_RETIRE_AFTER_HOURS)
    changed: list[Trend] = []
    retired = 0
    live = Trend.objects.filter(status=TrendStatus.LIVE).only(
        "id", "slug", "pinned", "published_at", "trending_score", "below_threshold_since"
    )
    for trend in live.iterator(chunk_size=2000):
        impressions, generations, shares = engagement.get(trend.pk, (0.0, 0.0, 0.0))
        new_score = round(score(impressions, generations, shares), 6)
        tired = (
            not trend.pinned
            and new_score < threshold
            and impressions >= settings.TRENDS_RETIRE_MIN_IMPRESSIONS
            and trend.published_at is not None
            and trend.published_at <= grace
        )
        since = trend.below_threshold_since
        figures = {
            "score": new_score,
            "threshold": threshold,
            "impressions": round(impressions, 1),
            "generations": round(generations, 2),
            "shares": round(shares, 2),
        }
        if tired and since is not None and since <= now - patience:
            with transaction.atomic():
                if Trend.objects.filter(pk=trend.pk, status=TrendStatus.LIVE, pinned=False).update(
                    status=TrendStatus.RETIRED,
                    retired_at=now,
                    trending_score=new_score,
                    score_updated_at=now,
                    updated_at=now,
                ):
                    _record(
                        trend,
                        ChangeAction.RETIRED,
                        f"Its score {new_score:.4f} stayed under {threshold} since {since.isoformat()} "
                        f"(more than {settings.TRENDS_RETIRE_AFTER_HOURS} h).",
                        below_threshold_since=since.isoformat(),
                        **figures,
                    )
                    retired += 1
            continue
        if tired and since is None:
            with transaction.atomic():
                if Trend.objects.filter(pk=trend.pk, below_threshold_since__isnull=True).update(
                    below_threshold_since=now
                ):
                    _record(
                        trend,
                        ChangeAction.BELOW_THRESHOLD,
                        f"Its score {new_score:.4f} fell under {threshold}; it retires if it stays there "
                        f"for {settings.TRENDS_RETIRE_AFTER_HOURS} h.",
                        **figures,
                    )
        elif not tired and since is not None:
            with transaction.atomic():
                if Trend.objects.filter(pk=trend.pk, below_threshold_since__isnull=False).update(
                    below_threshold_since=None
                ):
                    _record(
                        trend,
                        ChangeAction.RECOVERED,
                        f"Its score {new_score:.4f} is back at or over {threshold} (or it is pinned).",
                        **figures,
                    )
        if trend.trending_score != new_score:
            trend.trending_score = new_score
            trend.score_updated_at = now
            changed.append(trend)
    write_scores([(trend.pk, trend.trending_score) for trend in changed], now=now)
    return len(changed), retired


def write_scores(scores: list[tuple[object, float]], *, now: datetime, batch: int = 5000) -> None:
    """Writes many scores at once: one UPDATE ... FROM (VALUES ...) per batch on PostgreSQL (Django's
    bulk_update builds a CASE per row, which is quadratic there), executemany elsewhere."""
    table = Trend._meta.db_table
    pk = Trend._meta.pk
    stamp = connection.ops.adapt_datetimefield_value(now)
    with transaction.atomic(), connection.cursor() as cursor:
        for start in range(0, len(scores), batch):
            chunk = scores[start : start + batch]
            if connection.vendor == "postgresql":
                values = ", ".join(["(%s::uuid, %s::double precision)"] * len(chunk))
                params = [stamp] + [item for trend_id, score in chunk for item in (trend_id, score)]
                cursor.execute(
                    f"UPDATE {table} AS t SET trending_score = v.score, score_updated_at = %s "  # noqa: S608
                    f"FROM (VALUES {values}) AS v(id, score) WHERE t.id = v.id",
                    params,
                )
            else:
                cursor.executemany(
                    f"UPDATE {table} SET trending_score = %s, score_updated_at = %s WHERE id = %s",  # noqa: S608
                    [(score, stamp, pk.get_db_prep_value(trend_id, connection)) for trend_id, score in chunk],
                )


def trends_rotate(*, now: datetime | None = None) -> RotationResult:
    """One run of the job. Safe to run twice, or twice at once."""
    started = time.perf_counter()
    now = now or timezone.now()
    result = RotationResult()
    result.published, result.blocked = publish_due(now)
    result.retired = retire_due(now)
    result.rescored, retired = rescore_and_retire(now)
    result.retired += retired
    result.seconds = time.perf_counter() - started
    RotationRun.objects.create(
        started_at=now,
        finished_at=timezone.now(),
        published=result.published,
        retired=result.retired,
        rescored=result.rescored,
        seconds=result.seconds,
    )
    RotationRun.objects.filter(
        started_at__lt=now - timedelta(days=settings.TRENDS_ROTATION_RUNS_KEEP_DAYS)
    ).delete()
    if result.published or result.blocked or result.retired or result.rescored:
        screen_cache_invalidate()
    logger.info(
        "trend rotation: %s published, %s blocked, %s retired, %s rescored in %.2f s",
        result.published,
        result.blocked,
        result.retired,
        result.rescored,
        result.seconds,
    )
    return result
