from django.core.management.base import BaseCommand

from apps.jobs.lifecycle import jobs_reap


class Command(BaseCommand):
    help = (
        "Fails or retries GPU jobs of every kind whose worker went silent, expires those that waited too "
        "long, and re-sends jobs that never reached the broker. Safe to run at any time (cron, after an "
        "outage)."
    )

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"{jobs_reap()} job(s) changed or re-sent.")
