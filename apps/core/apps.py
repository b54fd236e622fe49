import importlib

from django.apps import AppConfig, apps

from backend.broker import configure_broker


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the production safety checks)

        configure_broker()
        # Declare every app's actors on the broker, as django_dramatiq does.
        for config in apps.get_app_configs():
            if config.name.startswith("apps."):
                try:
                    importlib.import_module(f"{config.name}.tasks")
                except ModuleNotFoundError as exc:
                    if exc.name != f"{config.name}.tasks":
                        raise
