"""Loads the demo fixtures (`fixtures/demo_account.json`): a demo account with credits. Idempotent."""

import json

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.accounts.models import User
from apps.credits.services import credits_grant


class Command(BaseCommand):
    help = "Create the demo account with credits (safe to run again)."

    def handle(self, *args, **options):
        data = json.loads((settings.BASE_DIR / "fixtures" / "demo_account.json").read_text())
        with transaction.atomic():
            user = User.objects.filter(email=data["email"]).first()
            if user is None:
                user = User.objects.create_user(email=data["email"], password=data["password"])
            credits_grant(user=user, amount=data["credits"], reason="demo", reference=f"demo:{user.pk}")
        self.stdout.write(f"demo account: {data['email']} / {data['password']}")
