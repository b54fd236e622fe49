from decimal import Decimal

import django.core.validators
from django.db import migrations, models

# apps/generations/shipped.py's prices when this migration was written (a copy, as migrations keep).
SHIPPED_PRICES = {"tiny-wan": Decimal("5700"), "ltx-video": Decimal("40"), "wan2.2-ti2v-5b": Decimal("3")}


def price_shipped_routes(apps, schema_editor):
    ModelRoute = apps.get_model("generations", "ModelRoute")
    for name, price in SHIPPED_PRICES.items():
        unpriced = ModelRoute.objects.filter(name=name, credits_per_million_cost=0)
        unpriced.update(credits_per_million_cost=price)


class Migration(migrations.Migration):
    dependencies = [("generations", "0013_route_cost_per_gpu_hour")]

    operations = [
        migrations.AddField(
            model_name="modelroute",
            name="credits_per_million_cost",
            field=models.DecimalField(
                decimal_places=4,
                default=Decimal("0"),
                help_text="The price of a render: credits per million units of cost, a unit being one "
                "denoising step over one latent token (steps x latent tokens of the clip at the tier's "
                "render profile). The trend's price for the tier is the minimum; price rules adjust the "
                "result (apps/generations/pricing.py). 0: the trend's price alone.",
                max_digits=12,
                validators=[django.core.validators.MinValueValidator(Decimal("0"))],
            ),
        ),
        migrations.RunPython(price_shipped_routes, migrations.RunPython.noop),
    ]
