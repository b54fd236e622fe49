from django.apps import AppConfig


class GenerationsConfig(AppConfig):
    name = "apps.generations"
    label = "generations"
    verbose_name = "Generations and model routes"

    def ready(self) -> None:
        # Imported here: an AppConfig module is imported before the models are ready.
        from apps.accounts.erasure import erasure_step_register
        from apps.trends.services import model_route_names_source_set

        from . import jobs  # noqa: F401  (registers this app's kind of GPU job with apps/jobs)
        from .account_erasure import ERASURE_STEP
        from .models import model_route_names

        erasure_step_register(ERASURE_STEP)
        model_route_names_source_set(model_route_names)  # the routes a trend may prefer
