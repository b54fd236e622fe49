from django.db import migrations

OLD = "LTX-Video 0.9.7 distilled (LTXConditionPipeline), fast."
# apps/generations/shipped.py's description when this migration was written: the recipe and the licence.
NEW = (
    "LTX-Video 0.9.7 distilled, one stage with its recipe (8 given timesteps, guidance 1.0, "
    "rescale 0.7). LTXV Open Weights License: commercial use capped by revenue."
)


def describe(apps, schema_editor) -> None:
    ModelRoute = apps.get_model("generations", "ModelRoute")
    ModelRoute.objects.filter(name="ltx-video", description=OLD).update(description=NEW)


class Migration(migrations.Migration):
    dependencies = [("generations", "0003_route_speed_profile")]

    operations = [migrations.RunPython(describe, migrations.RunPython.noop)]
