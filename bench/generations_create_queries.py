"""createGeneration's service in one process: the SQL of one create, and its CPU time (about 30 s).

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_generations \\
    BENCH_REDIS_URL=redis://127.0.0.1:6379/13 .venv/bin/python bench/generations_create_queries.py

`generation_create` as the createGeneration resolver calls it (a free-prompt DRAFT with a new idempotency
key, after-commit dispatch to the Redis broker included), without HTTP and GraphQL, on PostgreSQL and
Redis as in bench/generations_services.py (the database is created if missing and migrated; no GPU
worker consumes the jobs). Printed: every statement of one create (from Django's CaptureQueriesContext),
then the CPU time per create over `BENCH_CREATES` (300) creates. `BENCH_PROFILE=1` adds a cProfile of
them by cumulative CPU time (the profiler multiplies the times; read the shares).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stack import ROOT  # noqa: E402
from bench.generations_services import DATABASE_URL, bench_env, ensure_database  # noqa: E402

CREATES = int(os.environ.get("BENCH_CREATES", "300"))


def main() -> None:
    ensure_database(DATABASE_URL)
    env = bench_env(Path(tempfile.mkdtemp(prefix="bench-create-")))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    os.environ.clear()
    os.environ.update(env)

    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.accounts.models import User
    from apps.accounts.services import user_sign_up
    from apps.generations import services

    email = f"bench-create-{uuid.uuid4().hex[:8]}@example.com"
    user_sign_up(email=email, password="correct horse battery staple 9")
    user = User.objects.get(email=email)

    def create() -> None:
        request = services.GenerationRequest(
            prompt="a throughput clip", quality="DRAFT", idempotency_key=str(uuid.uuid4())
        )
        services.generation_create(user=user, request=request)

    for _ in range(5):  # warm: imports, connections, the broker's scripts
        create()
    with CaptureQueriesContext(connection) as queries:
        create()
    print(f"{len(queries.captured_queries)} statements per create:")
    for query in queries.captured_queries:
        print(f"  {query['sql'][:150]}")
    started = time.process_time()
    for _ in range(CREATES):
        create()
    print(f"{CREATES} creates: {(time.process_time() - started) / CREATES * 1000:.2f} ms CPU each")
    if os.environ.get("BENCH_PROFILE") == "1":
        profile = cProfile.Profile(time.process_time)
        profile.runcall(lambda: [create() for _ in range(CREATES)])
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
