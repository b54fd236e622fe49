from django.apps import AppConfig


class GenerationsConfig(AppConfig):
    name = "apps.generations"
    label = "generations"
    verbose_name = "Generations and model routes"
