from django.apps import AppConfig


class CharactersConfig(AppConfig):
    name = "apps.characters"
    label = "characters"
    verbose_name = "Soul IDs (characters)"

    def ready(self) -> None:
        # Imported here: an AppConfig module is imported before the models are ready.
        from apps.accounts.erasure import erasure_step_register
        from apps.trends.models import SectionType
        from apps.trends.screen import personal_check_register

        from . import jobs  # noqa: F401  (registers this app's kind of GPU job with apps/jobs)
        from .account_erasure import ERASURE_STEP
        from .selectors import character_usable_exists_for_user

        erasure_step_register(ERASURE_STEP)
        personal_check_register(SectionType.SOUL_ID_PROMPT, character_usable_exists_for_user)
