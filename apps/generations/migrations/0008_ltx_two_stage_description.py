from django.db import migrations

OLD = (
    "LTX-Video 0.9.7 distilled, one stage with its recipe (8 given timesteps, guidance 1.0, "
    "rescale 0.7). LTXV Open Weights License: commercial use capped by revenue."
)
# apps/generations/shipped.py's description when this migration was written: the two-stage flow (low
# resolution, latent upsampler, refine) runs when the checkpoint folder holds latent_upsampler/.
NEW = (
    "LTX-Video 0.9.7 distilled, its recipe (8 timesteps, guidance 1.0, rescale 0.7); two stages if "
    "its folder has latent_upsampler/, else one. LTXV Open Weights License: commercial use capped by "
    "revenue."
)


def describe(apps, schema_editor) -> None:
    ModelRoute = apps.get_model("generations", "ModelRoute")
    # only a description nobody changed in admin
    ModelRoute.objects.filter(name="ltx-video", description=OLD).update(description=NEW)


class Migration(migrations.Migration):
    dependencies = [("generations", "0007_speed_profile_help")]

    operations = [migrations.RunPython(describe, migrations.RunPython.noop)]
