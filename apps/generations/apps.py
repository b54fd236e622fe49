from django.apps import AppConfig


class GenerationsConfig(AppConfig):
    name = "apps.generations"
    label = "generations"
    verbose_name = "Generations and model routes"

    def ready(self) -> None:
        # Imported here: an AppConfig module is imported before the models are ready.
        from apps.accounts.erasure import erasure_step_register
        from apps.characters.training import training_route_source_set
        from apps.trends.models import SectionType
        from apps.trends.screen import personal_check_register
        from apps.trends.services import (
            model_route_names_source_set,
            route_durations_source_set,
            sound_in_use_source_set,
        )

        from . import jobs  # noqa: F401  (registers this app's kind of GPU job with apps/jobs)
        from .account_erasure import ERASURE_STEP
        from .models import model_route_names
        from .routing import route_durations_beyond, route_spec_enabled
        from .selectors import generation_sound_in_use, generations_to_continue_exist

        erasure_step_register(ERASURE_STEP)
        training_route_source_set(route_spec_enabled)  # the route a Soul ID trains for
        personal_check_register(SectionType.CONTINUE, generations_to_continue_exist)
        model_route_names_source_set(model_route_names)  # the routes a trend may prefer
        sound_in_use_source_set(generation_sound_in_use)  # a replaced sound stays while videos read it
        route_durations_source_set(route_durations_beyond)  # a trend offers lengths its route renders
