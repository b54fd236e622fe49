from decimal import Decimal

from django.db import migrations

# A copy of apps/generations/shipped.py as it was when this migration was written.
ROUTES = (
    {
        "name": "tiny-wan",
        "description": "Random-weight Wan-shaped pipeline on the CPU (tests, embedded run).",
        "family": "tiny-wan",
        "checkpoint": "",
        "device": "cpu",
        "width": 64,
        "height": 64,
        "fps": 8,
        "frames": 41,
        "steps": 4,
        "guidance": 5.0,
        "image_conditioning": True,
        "lora_support": True,
        "quality_tiers": ["DRAFT", "STANDARD", "CINEMA"],
        "lanes": ["INSTANT", "ECONOMY"],
        "cost_per_second": Decimal("0"),
        "seconds_per_step": 0.05,
        "overhead_seconds": 1.0,
        "enabled": True,
    },
    {
        "name": "ltx-video",
        "description": "LTX-Video 0.9.7 distilled (LTXConditionPipeline), fast.",
        "family": "ltx",
        "checkpoint": "LTX-Video-0.9.7-distilled",
        "device": "cuda",
        "width": 1216,
        "height": 704,
        "fps": 24,
        "frames": 121,
        "steps": 8,
        "guidance": 1.0,
        "image_conditioning": True,
        "lora_support": True,
        "quality_tiers": ["DRAFT", "STANDARD"],
        "lanes": ["INSTANT", "ECONOMY"],
        "cost_per_second": Decimal("0.0100"),
        "seconds_per_step": 0.5,
        "overhead_seconds": 8.0,
        "enabled": True,
    },
    {
        "name": "wan2.2-ti2v-5b",
        "description": "Wan 2.2 TI2V-5B (WanPipeline / WanImageToVideoPipeline, expand_timesteps).",
        "family": "wan22",
        "checkpoint": "Wan2.2-TI2V-5B-Diffusers",
        "device": "cuda",
        "width": 1280,
        "height": 704,
        "fps": 24,
        "frames": 121,
        "steps": 50,
        "guidance": 5.0,
        "image_conditioning": True,
        "lora_support": True,
        "quality_tiers": ["STANDARD", "CINEMA"],
        "lanes": ["INSTANT", "ECONOMY"],
        "cost_per_second": Decimal("0.0500"),
        "seconds_per_step": 4.0,
        "overhead_seconds": 20.0,
        "enabled": True,
    },
)
FALLBACKS = {"wan2.2-ti2v-5b": "ltx-video"}


def create_routes(apps, schema_editor):
    ModelRoute = apps.get_model("generations", "ModelRoute")
    for row in ROUTES:
        ModelRoute.objects.get_or_create(name=row["name"], defaults=row)
    for name, fallback in FALLBACKS.items():
        ModelRoute.objects.filter(name=name, fallback__isnull=True).update(
            fallback=ModelRoute.objects.get(name=fallback)
        )


def remove_routes(apps, schema_editor):
    ModelRoute = apps.get_model("generations", "ModelRoute")
    ModelRoute.objects.filter(name__in=[row["name"] for row in ROUTES], generations__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("generations", "0001_initial")]

    operations = [migrations.RunPython(create_routes, remove_routes)]
