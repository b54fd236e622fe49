"""CPU time of building the home screen's shared part from the database, in process, one build at a time:
what every uncached `homeScreen` (and its plain twin in trends_home.py) pays before serializing anything.

    .venv/bin/python bench/trends_build.py

Seeds a temporary embedded stack (SQLite) as trends_home.py does (the demo catalogue plus copies up to 200
live trends), then times, with the screen cache off: `build_shared_screen` (sections, items, trends,
categories, the layout), `home_screen_with_card_prices` (that plus the card prices: what `homeScreen` and
the twin call), and the live trends' query alone, as model instances and as plain rows (the part no
Python-side change can cut). Environment: BENCH_TRENDS (default 200), BENCH_BUILDS (default 200).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import ROOT, describe_machine, server_env  # noqa: E402

TRENDS = int(os.environ.get("BENCH_TRENDS", "200"))
BUILDS = int(os.environ.get("BENCH_BUILDS", "200"))


def cpu_ms(call, n: int = BUILDS) -> float:
    for _ in range(max(n // 10, 3)):
        call()
    started = time.process_time()
    for _ in range(n):
        call()
    return (time.process_time() - started) / n * 1000


def measure() -> None:
    import django

    django.setup()
    from apps.generations.pricing import home_screen_with_card_prices
    from apps.trends.models import Trend, TrendStatus
    from apps.trends.screen import build_shared_screen
    from apps.trends.selectors import audience_parse

    audience = audience_parse(platform="IOS", app_version="2.0", locale="en")
    live = Trend.objects.filter(status=TrendStatus.LIVE)
    columns = [field.attname for field in Trend._meta.concrete_fields]
    screen, _ = build_shared_screen(audience)
    cards = sum(len(section.trends) for section in screen.sections)
    print(f"{live.count()} live trends, {len(screen.sections)} shared sections, {cards} cards")
    rows = [
        ("build_shared_screen", lambda: build_shared_screen(audience)),
        ("home_screen_with_card_prices", lambda: home_screen_with_card_prices(audience=audience, user=None)),
        ("live trends as models", lambda: list(live.all())),
        ("live trends as plain rows", lambda: list(live.values_list(*columns))),
    ]
    print(f"{'':<30} {'ms CPU':>8}")
    for name, call in rows:
        print(f"{name:<30} {cpu_ms(call):>8.2f}")


def main() -> None:
    if sys.argv[1:] == ["measure"]:
        measure()
        return
    print(f"bench/trends_build.py: {describe_machine()}; {TRENDS} live trends; {BUILDS} builds per row")
    with tempfile.TemporaryDirectory(prefix="bench-trends-build-") as var_dir:
        env = server_env(
            Path(var_dir),
            DJANGO_SETTINGS_MODULE="bench.trends_settings",
            PYTHONPATH=str(ROOT),
            TRENDS_SCHEDULER_ENABLED="0",
            TRENDS_SCREEN_CACHE_SECONDS="0",
            BENCH_TRENDS=str(TRENDS),
        )
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
        )
        seed = [sys.executable, str(Path(__file__).with_name("trends_home.py")), "seed"]
        subprocess.run(seed, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, __file__, "measure"], cwd=ROOT, env=env, check=True)


if __name__ == "__main__":
    main()
