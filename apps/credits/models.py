"""The credits ledger: a wallet per user, append-only entries, and one hold per owning object."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.core.models import BaseModel


class Wallet(BaseModel):
    """`balance` is what the user can spend now; credits on hold are already taken out of it."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="wallet")
    balance = models.IntegerField(default=0)
    held = models.IntegerField(default=0)
    # Credits taken back (a refunded purchase) that were already spent: never a negative balance, they
    # come out of the next grants first.
    owed = models.IntegerField(default=0)
    # Grows by one with every change (under the row lock); wallet events carry it so that a subscriber
    # can drop an event that arrives after a newer one.
    version = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(balance__gte=0), name="wallet_balance_not_negative"),
            models.CheckConstraint(condition=Q(held__gte=0), name="wallet_held_not_negative"),
            models.CheckConstraint(condition=Q(owed__gte=0), name="wallet_owed_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.balance} credits)"


class EntryKind(models.TextChoices):
    GRANT = "grant"
    PURCHASE = "purchase"
    HOLD = "hold"
    CAPTURE = "capture"
    RELEASE = "release"
    REVOKE = "revoke"  # credits taken back (a store refund, a support correction)


class CreditEntry(BaseModel):
    """One line of the ledger. Never updated or deleted. `delta` is the change to the spendable balance;
    `owed_delta` the change to what the user owes (a revoke beyond the balance adds to it; grants pay it)."""

    wallet = models.ForeignKey(Wallet, on_delete=models.CASCADE, related_name="entries")
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    amount = models.PositiveIntegerField()
    delta = models.IntegerField()
    balance_after = models.IntegerField()
    owed_delta = models.IntegerField(default=0)
    reason = models.CharField(max_length=200, blank=True)
    # Grants: an idempotency reference (e.g. "welcome:<user id>"). Holds: "<app.model>:<pk>" of the owner.
    reference = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "credit entries"
        constraints = [
            models.UniqueConstraint(
                fields=["reference", "kind"],
                condition=~Q(reference=""),
                name="credit_entry_once_per_reference",
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="credit_entry_amount_positive"),
        ]
        indexes = [models.Index(fields=["wallet", "-created_at"])]

    def __str__(self) -> str:  # the wallet page's row heading; Django's would be "CreditEntry object (<id>)"
        return f"{self.get_kind_display()} {self.delta:+d}"


class HoldStatus(models.TextChoices):
    HELD = "held"
    CAPTURED = "captured"
    RELEASED = "released"


class CreditHold(BaseModel):
    """Credits reserved for one owning object (a generation, a training), settled exactly once."""

    wallet = models.ForeignKey(Wallet, on_delete=models.CASCADE, related_name="holds")
    owner = models.CharField(max_length=128, unique=True)  # "<app_label.model>:<pk>"
    amount = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=HoldStatus.choices, default=HoldStatus.HELD)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="credit_hold_amount_positive")]
