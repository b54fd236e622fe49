"""Entry point of a Django (backend) worker process in services mode.

    python -m backend.worker            # consumes exactly apps.core.queues.DJANGO_QUEUES

It hands an explicit queue list to Dramatiq's CLI, so a backend worker never takes a GPU job.
"""

from __future__ import annotations

import os
import sys

from apps.core.queues import DJANGO_QUEUES


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    import django

    django.setup()


def main() -> int:
    setup()
    from dramatiq.cli import main as dramatiq_main  # read at call time: tests replace dramatiq.cli.main

    threads = os.environ.get("DRAMATIQ_WORKER_THREADS", "4")
    sys.argv = [
        "dramatiq",
        "backend.worker_boot",
        "--processes",
        "1",
        "--threads",
        threads,
        "--queues",
        *DJANGO_QUEUES,
    ]
    return dramatiq_main()


if __name__ == "__main__":
    sys.exit(main())
