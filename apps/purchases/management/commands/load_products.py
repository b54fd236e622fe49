"""Loads the product catalogue (`fixtures/products.json`), creating missing products by name. Products
already there are left as staff edited them. Idempotent."""

import json

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.purchases.models import Product


class Command(BaseCommand):
    help = "Create the catalogue's missing products (safe to run again; never overwrites staff edits)."

    def handle(self, *args, **options):
        data = json.loads((settings.BASE_DIR / "fixtures" / "products.json").read_text())
        created = 0
        with transaction.atomic():
            for row in data["products"]:
                if Product.objects.filter(name=row["name"]).exists():
                    continue
                product = Product(**row)
                product.full_clean()
                product.save()
                created += 1
        if options["verbosity"]:
            self.stdout.write(f"products: {created} created, {len(data['products']) - created} already there")
