from django.apps import AppConfig


class CharactersConfig(AppConfig):
    name = "apps.characters"
    label = "characters"
    verbose_name = "Soul IDs (characters)"

    def ready(self) -> None:
        from . import jobs  # noqa: F401  (registers this app's kind of GPU job with apps/jobs)
