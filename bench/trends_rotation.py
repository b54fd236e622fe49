"""Score recomputation for 10,000 live trends and 1,000,000 engagement events: seconds and peak memory.

    .venv/bin/python bench/trends_rotation.py                    # SQLite in a temporary folder
    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/x .venv/bin/python bench/trends_rotation.py

With BENCH_DATABASE_URL the script creates its own database next to the one named (bench_trends_<pid>),
and drops it at the end. Steps, each timed:
  1. 10,000 live trends (bulk insert);
  2. 1,000,000 engagement events (impressions, generations started, shares), skewed towards popular
     trends and recent hours over the last 7 days, recorded through the same hourly-bucket upsert the
     mutations use (`stats_add`, batched per hour);
  3. one rotation run (`trends_rotate`: decayed aggregate, new scores, retirement checks, bulk update),
     with its wall time, peak Python heap (tracemalloc) and the process's peak RSS;
  4. a second run right after (scores unchanged: the steady-state cost of the periodic job).

Environment: BENCH_TRENDS (default 10000), BENCH_EVENTS (default 1000000), BENCH_KEEP_DB=1 (keep the
PostgreSQL database, to look at query plans).
"""

from __future__ import annotations

import os
import random
import resource
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRENDS = int(os.environ.get("BENCH_TRENDS", "10000"))
EVENTS = int(os.environ.get("BENCH_EVENTS", "1000000"))


def _setup_database() -> tuple[str, callable]:
    base = os.environ.get("BENCH_DATABASE_URL")
    if not base:
        folder = tempfile.mkdtemp(prefix="bench-rotation-")
        os.environ["VAR_DIR"] = folder
        os.environ.pop("DATABASE_URL", None)
        return "SQLite", lambda: None
    import psycopg

    name = f"bench_trends_{os.getpid()}"
    admin = base.replace("postgres://", "postgresql://", 1).rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    os.environ["DATABASE_URL"] = base.rsplit("/", 1)[0] + f"/{name}"

    def drop() -> None:
        if os.environ.get("BENCH_KEEP_DB"):
            print(f"  kept the database {name}")
            return
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return "PostgreSQL", drop


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "backend.settings"
    os.environ["DEBUG"] = "0"
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ.pop("REDIS_URL", None)
    engine, drop = _setup_database()
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import transaction
    from django.utils import timezone

    from apps.trends.models import Category, Trend, TrendStat, TrendStatus
    from apps.trends.rotation import decayed_engagement, trends_rotate
    from apps.trends.services import current_hour, stats_add

    try:
        call_command("migrate", verbosity=0)
        print(f"bench/trends_rotation.py: {engine}; {TRENDS:,} trends, {EVENTS:,} events")
        rng = random.Random(42)
        now = timezone.now()

        started = time.perf_counter()
        category = Category.objects.create(slug="bench", title="Bench")
        rows = [
            Trend(
                id=uuid.uuid4(),
                slug=f"trend-{i:05d}",
                title=f"Trend {i}",
                category=category,
                prompt_template="{subject} in the rain",
                aspect_ratios=["PORTRAIT_9_16"],
                durations=[5],
                preferred_model_route="tiny-wan",
                status=TrendStatus.LIVE,
                published_at=now - timezone.timedelta(hours=rng.randint(1, 24 * 30)),
            )
            for i in range(TRENDS)
        ]
        Trend.objects.bulk_create(rows, batch_size=2000)
        print(f"  1. {TRENDS:,} trends inserted in {time.perf_counter() - started:.1f} s")

        started = time.perf_counter()
        ids = [t.id for t in rows]
        weights = [1 / (rank + 1) ** 0.8 for rank in range(TRENDS)]  # a long tail of popularity
        hour_now = current_hour()
        hours = list(range(hour_now - 24 * 7 + 1, hour_now + 1))
        hour_weights = [0.5 ** ((hour_now - h) / 36) for h in hours]  # recent hours busier
        kinds = ["impressions"] * 90 + ["generations_started"] * 8 + ["shares"] * 2
        buckets: dict[int, dict] = {}
        chosen_trends = rng.choices(ids, weights=weights, k=EVENTS)
        chosen_hours = rng.choices(hours, weights=hour_weights, k=EVENTS)
        chosen_kinds = rng.choices(kinds, k=EVENTS)
        for trend_id, hour, kind in zip(chosen_trends, chosen_hours, chosen_kinds, strict=True):
            per_trend = buckets.setdefault(hour, {}).setdefault(trend_id, {})
            per_trend[kind] = per_trend.get(kind, 0) + 1
        del chosen_trends, chosen_hours, chosen_kinds
        for hour, per_trend in buckets.items():
            items = list(per_trend.items())
            for start in range(0, len(items), 2000):
                with transaction.atomic():
                    stats_add(dict(items[start : start + 2000]), hour=hour)
        n_buckets = TrendStat.objects.count()
        print(
            f"  2. {EVENTS:,} events recorded as {n_buckets:,} hourly buckets in "
            f"{time.perf_counter() - started:.1f} s"
        )
        del buckets

        started = time.perf_counter()
        engagement = decayed_engagement(timezone.now())
        seconds = time.perf_counter() - started
        print(f"  (the decayed aggregate alone: {seconds:.2f} s for {len(engagement):,} trends)")
        for label in ("3. rotation, first run", "4. rotation, steady state"):
            rss_before = _rss_mb()
            tracemalloc.start()
            started = time.perf_counter()
            result = trends_rotate()
            seconds = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(
                f"  {label}: {seconds:.2f} s, {result.rescored:,} scores written, {result.retired} retired; "
                f"peak Python heap {peak / 2**20:.1f} MiB; peak RSS {_rss_mb():.0f} MiB "
                f"(before: {rss_before:.0f} MiB)"
            )
        top = list(Trend.objects.order_by("-trending_score").values_list("slug", "trending_score")[:3])
        print(f"  top scores: {', '.join(f'{slug} {score:.4f}' for slug, score in top)}")
    finally:
        drop()


if __name__ == "__main__":
    main()
