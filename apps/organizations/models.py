"""Organizations: businesses that use the REST API with keys, and receive signed webhooks.

An organization acts through its own service account (`account`, a user that cannot sign in): the account
holds the organization's wallet in the one credits ledger and owns the generations, uploads and Soul IDs
made with the organization's keys. So every service and every selector's ownership check works for an
organization exactly as for an app user, and nothing in the ledger or the generations changes shape.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from apps.core.fields import JSONField
from apps.core.models import BaseModel

KEY_PREFIX = "dfk_live_"  # leaked keys are recognizable (secret scanners match on it)
WEBHOOK_EVENT_TYPES = (
    "generation.succeeded",
    "generation.failed",
    "generation.canceled",
    "character.ready",
)


def _default_events() -> list[str]:
    return list(WEBHOOK_EVENT_TYPES)


def _default_scopes() -> list[str]:
    return list(ApiKeyScope.values)


class Organization(BaseModel):
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True)
    account = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="organization_account",
        editable=False,
        help_text="The service account that holds the wallet and owns what the keys make.",
    )
    max_active_generations = models.PositiveIntegerField(
        default=20,
        validators=[MinValueValidator(1)],
        help_text="Its share of the GPU lanes: generations in the lanes at once. More wait, charged but "
        "unsent, and go as these finish (apps/generations/fair_share.py).",
    )
    requests_per_minute = models.PositiveIntegerField(
        default=600, validators=[MinValueValidator(1)], help_text="Per API key."
    )

    def __str__(self) -> str:
        return self.name


class MemberRole(models.TextChoices):
    OWNER = "owner"
    ADMIN = "admin"
    DEVELOPER = "developer"


class Membership(BaseModel):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=MemberRole.choices, default=MemberRole.DEVELOPER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "user"], name="membership_once")]


class ApiKeyScope(models.TextChoices):
    GENERATIONS_READ = "generations:read"
    GENERATIONS_WRITE = "generations:write"
    UPLOADS_WRITE = "uploads:write"


class ApiKey(BaseModel):
    """The secret is shown once, when made; only its SHA-256 is kept (a 256-bit random secret needs no
    slow hash). `prefix` (the public part) tells staff and the owner which key is which."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=80)
    prefix = models.CharField(max_length=32, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = JSONField(default=_default_scopes, help_text=f"Any of: {', '.join(ApiKeyScope.values)}")
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    request_count = models.PositiveBigIntegerField(default=0, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"  # not Django's "api key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class WebhookEndpoint(BaseModel):
    """Where an organization hears of its events. Two secrets may be active at once (rotation): every
    message is signed with both until the previous one expires."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=500)
    events = JSONField(default=_default_events, help_text=f"Any of: {', '.join(WEBHOOK_EVENT_TYPES)}")
    secret = models.CharField(max_length=80, editable=False)
    previous_secret = models.CharField(max_length=80, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    failed_deliveries_in_a_row = models.PositiveIntegerField(default=0, editable=False)
    disabled_reason = models.CharField(max_length=300, blank=True, editable=False)

    def __str__(self) -> str:
        return self.url


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # every attempt failed (or the endpoint was disabled meanwhile)


class WebhookDelivery(BaseModel):
    """One event for one endpoint; `message_id` is the Standard Webhooks `webhook-id`, the same on every
    attempt and on a replay, so a receiver can drop duplicates."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    message_id = models.CharField(max_length=64, db_index=True)
    event_type = models.CharField(max_length=40)
    payload = JSONField()
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.CheckConstraint(
                condition=~Q(status=DeliveryStatus.SUCCEEDED) | Q(delivered_at__isnull=False),
                name="webhook_delivery_succeeded_has_time",
            )
        ]
