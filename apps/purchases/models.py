"""In-app purchases: the catalogue staff sell, every store charge verified on the server, the plans the
stores renew, and every server notification received.

The stores are the source of truth: a `Purchase` row is what a store said about one charge, a
`Subscription` row what it last said about one plan. Credits move only through apps.credits (a grant per
charge with reference `purchase:<platform>:<transaction id>`, a revoke per refund), so the ledger is
exactly-once by its unique references and by the unique (platform, transaction_id) here.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.accounts.models import Platform
from apps.core.fields import JSONField
from apps.core.models import BaseModel

from .stores import Environment, SubscriptionState


class ProductKind(models.TextChoices):
    CREDIT_PACK = "CREDIT_PACK", "Credit pack (consumable)"
    SUBSCRIPTION = "SUBSCRIPTION", "Plan (auto-renewing subscription)"


class ProductQuerySet(models.QuerySet):
    def on_sale(self, *, at=None) -> ProductQuerySet:
        at = at or timezone.now()
        return self.filter(is_active=True).filter(
            Q(available_from__isnull=True) | Q(available_from__lte=at),
            Q(available_until__isnull=True) | Q(available_until__gt=at),
        )


class Product(BaseModel):
    """One thing the app sells, with its id in each store. Prices and localized names come from the store
    SDK on the device; the server only knows what a purchase grants."""

    name = models.CharField(max_length=80, help_text="For staff: the paywall shows the store's own title.")
    kind = models.CharField(max_length=16, choices=ProductKind.choices)
    apple_product_id = models.CharField(
        "App Store product id", max_length=100, blank=True, help_text="Empty: not sold on iOS."
    )
    google_product_id = models.CharField(
        "Google Play product id", max_length=100, blank=True, help_text="Empty: not sold on Android."
    )
    credits = models.PositiveIntegerField(
        help_text="Granted per purchase (a pack) or per billing period (a plan)."
    )
    level = models.PositiveSmallIntegerField(
        default=0, help_text="Plans only: a higher level upgrades a lower one (1, 2, 3...). 0 for packs."
    )
    display_order = models.PositiveSmallIntegerField(default=0)
    is_active = models.BooleanField(default=True)
    available_from = models.DateTimeField(null=True, blank=True)
    available_until = models.DateTimeField(null=True, blank=True)

    objects = ProductQuerySet.as_manager()

    class Meta:
        ordering = ["display_order", "credits"]
        constraints = [
            models.UniqueConstraint(
                fields=["apple_product_id"], condition=~Q(apple_product_id=""), name="product_apple_id_unique"
            ),
            models.UniqueConstraint(
                fields=["google_product_id"],
                condition=~Q(google_product_id=""),
                name="product_google_id_unique",
            ),
            models.CheckConstraint(condition=Q(credits__gt=0), name="product_grants_credits"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.credits} credits)"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if not self.apple_product_id and not self.google_product_id:
            errors["apple_product_id"] = "Give the product's id in at least one store."
        if self.kind == ProductKind.SUBSCRIPTION and self.level < 1:
            errors["level"] = "A plan needs a level of 1 or more (higher plans upgrade lower ones)."
        if self.kind == ProductKind.CREDIT_PACK and self.level != 0:
            errors["level"] = "Credit packs have no level: leave it at 0."
        if self.available_from and self.available_until and self.available_until <= self.available_from:
            errors["available_until"] = "The end of the sale must be after its start."
        if errors:
            raise ValidationError(errors)

    def store_product_id(self, platform: str) -> str:
        return self.apple_product_id if platform == Platform.IOS else self.google_product_id


class PurchaseSource(models.TextChoices):
    APP = "app", "The app (verifyPurchase)"
    NOTIFICATION = "notification", "A store notification"
    RESTORE = "restore", "restorePurchases"
    ADMIN = "admin", "Staff"


class PurchaseStatus(models.TextChoices):
    GRANTED = "granted"
    REFUNDED = "refunded"  # refunded or revoked by the store: the credits were taken back
    IGNORED = "ignored"  # verified but not granted (a sandbox purchase where sandbox is off)


class Purchase(BaseModel):
    """One store charge (a pack, a plan's first period, one renewal): granted exactly once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="purchases")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="purchases")
    platform = models.CharField(max_length=16, choices=Platform.choices)
    environment = models.CharField(max_length=16, choices=[(e.value, e.value) for e in Environment])
    transaction_id = models.CharField(max_length=200)
    original_id = models.CharField(max_length=4096, help_text="App Store original transaction / Play token.")
    purchase_token = models.CharField(max_length=4096, blank=True)  # Google Play, to acknowledge
    quantity = models.PositiveIntegerField(default=1)
    credits = models.PositiveIntegerField(help_text="Credits this charge granted.")
    status = models.CharField(max_length=16, choices=PurchaseStatus.choices, default=PurchaseStatus.GRANTED)
    source = models.CharField(max_length=16, choices=PurchaseSource.choices)
    purchased_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(max_length=200, blank=True)
    credits_taken_back = models.PositiveIntegerField(default=0)
    credits_owed = models.PositiveIntegerField(default=0, help_text="Refunded credits already spent.")
    raw = JSONField(default=dict, help_text="The store's decoded, verified payload.")

    class Meta:
        ordering = ["-purchased_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["platform", "transaction_id"], name="purchase_once_per_transaction"
            )
        ]
        indexes = [
            models.Index(fields=["user", "-purchased_at"]),
            models.Index(fields=["platform", "original_id"]),
        ]

    def __str__(self) -> str:
        return f"{self.platform} {self.transaction_id}"

    @property
    def grant_reference(self) -> str:
        return f"purchase:{self.platform}:{self.transaction_id}"


class Subscription(BaseModel):
    """One plan as its store last described it (App Store original transaction / Play purchase token)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="subscriptions")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="subscriptions")
    platform = models.CharField(max_length=16, choices=Platform.choices)
    environment = models.CharField(max_length=16, choices=[(e.value, e.value) for e in Environment])
    original_id = models.CharField(max_length=4096)
    state = models.CharField(max_length=16, choices=[(s.value, s.value) for s in SubscriptionState])
    expires_at = models.DateTimeField(null=True, blank=True)
    will_renew = models.BooleanField(default=True)
    grace_until = models.DateTimeField(null=True, blank=True)
    replaced_by = models.CharField(max_length=4096, blank=True, help_text="Play: the token of the new plan.")
    last_event_at = models.DateTimeField(
        help_text="Store time of the newest state applied (older ones lose)."
    )

    class Meta:
        ordering = ["-expires_at"]
        constraints = [
            models.UniqueConstraint(fields=["platform", "original_id"], name="subscription_once_per_original")
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.product.name} ({self.state})"

    @property
    def grants_access(self) -> bool:
        now = timezone.now()
        if self.state == SubscriptionState.GRACE_PERIOD:
            return self.grace_until is None or self.grace_until > now
        return self.state == SubscriptionState.ACTIVE and (self.expires_at is None or self.expires_at > now)


class NotificationOutcome(models.TextChoices):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"  # authentic but nothing to do (test, sandbox where sandbox is off, unknown user)
    FAILED = "failed"  # to be redelivered by the store


class StoreNotification(BaseModel):
    """Every server notification received, with its decoded payload (for admin and replays)."""

    platform = models.CharField(max_length=16, choices=Platform.choices)
    notification_id = models.CharField(max_length=200)
    type = models.CharField(max_length=64)
    subtype = models.CharField(max_length=64, blank=True)
    environment = models.CharField(max_length=16, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    outcome = models.CharField(max_length=16, choices=NotificationOutcome.choices)
    detail = models.CharField(max_length=300, blank=True)
    attempts = models.PositiveIntegerField(default=1)
    raw = JSONField(default=dict)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["platform", "notification_id"], name="notification_once")
        ]

    def __str__(self) -> str:
        return f"{self.platform} {self.type} {self.subtype}".strip()
