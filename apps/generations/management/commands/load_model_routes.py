from django.core.management.base import BaseCommand

from apps.generations.models import ModelRoute
from apps.generations.shipped import routes_ensure_shipped


class Command(BaseCommand):
    help = "Creates the shipped model routes that are missing (never changes existing ones)."

    def handle(self, *args, **options) -> None:
        created = routes_ensure_shipped(ModelRoute)
        self.stdout.write(f"{created} model route(s) created; {ModelRoute.objects.count()} in all.")
