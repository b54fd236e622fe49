from django.apps import AppConfig


class GenerationsConfig(AppConfig):
    name = "apps.generations"
    label = "generations"
    verbose_name = "Generations and model routes"

    def ready(self) -> None:
        from . import jobs  # noqa: F401  (registers this app's kind of GPU job with apps/jobs)
