from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"

    def ready(self) -> None:
        # Connects the user save/delete receivers that keep the per-process user cache exact.
        from . import auth_cache  # noqa: F401
