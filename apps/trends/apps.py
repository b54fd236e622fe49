from django.apps import AppConfig


class TrendsConfig(AppConfig):
    name = "apps.trends"
    label = "trends"
    verbose_name = "Trends and home screen"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from .curators import curator_group_ensure_after_migrate

        # Permissions exist only after migrate; the curator group is (re)built then, idempotently.
        post_migrate.connect(curator_group_ensure_after_migrate, sender=self)
