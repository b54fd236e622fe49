from django.core.management.base import BaseCommand

from apps.generations.services import generations_reap


class Command(BaseCommand):
    help = (
        "Fails or retries generations whose worker went silent, expires those that waited too long, and "
        "re-sends jobs that never reached the broker. Safe to run at any time (cron, after an outage)."
    )

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"{generations_reap()} generation(s) changed or re-sent.")
