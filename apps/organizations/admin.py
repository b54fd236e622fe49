"""Staff manage organizations, members, API keys (a new key's secret is shown once, on save) and webhook
endpoints, and read the delivery log (with replay). A disabled endpoint shows why in its list."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from apps.core.admin import ReadOnlyAdmin
from apps.core.errors import ValidationFailed

from .models import ApiKey, ApiKeyScope, Membership, Organization, WebhookDelivery, WebhookEndpoint
from .services import api_key_revoke, api_key_scopes_clean, api_key_secret_new, organization_create
from .webhooks import (
    webhook_delivery_replay,
    webhook_endpoint_enable,
    webhook_events_clean,
    webhook_secret_new,
    webhook_secret_rotate,
    webhook_url_check,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "max_active_generations", "requests_per_minute", "wallet", "created_at")
    search_fields = ("name", "slug")
    readonly_fields = ("account", "wallet")
    inlines = [MembershipInline]

    @admin.display(description="Wallet (grant credits there)")
    def wallet(self, obj: Organization):
        if obj.pk is None:
            return "-"
        wallet = getattr(obj.account, "wallet", None)
        if wallet is None:
            return "empty"
        url = reverse("admin:credits_wallet_change", args=[wallet.pk])
        return format_html('<a href="{}">{} credits</a>', url, wallet.balance)

    def save_model(self, request, obj, form, change) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        created = organization_create(
            name=obj.name,
            slug=obj.slug,
            max_active_generations=obj.max_active_generations,
            requests_per_minute=obj.requests_per_minute,
        )
        obj.pk, obj.account = created.pk, created.account
        obj._state.adding = False


class ApiKeyForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("organization", "name", "scopes")

    def clean_scopes(self):
        try:
            return api_key_scopes_clean(self.cleaned_data["scopes"])
        except ValidationFailed as exc:
            raise forms.ValidationError(exc.message) from None


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = (
        "name",
        "prefix",
        "organization",
        "scope_list",
        "last_used_at",
        "request_count",
        "revoked_at",
    )
    list_filter = ("organization",)
    search_fields = ("name", "prefix", "organization__name")
    readonly_fields = ("prefix", "last_used_at", "request_count", "revoked_at")
    actions = ["revoke"]

    @admin.display(description="Scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    def get_changeform_initial_data(self, request):
        return {"scopes": list(ApiKeyScope.values), **super().get_changeform_initial_data(request)}

    def save_model(self, request, obj: ApiKey, form, change) -> None:
        if not change:  # a new key: its secret is shown this once and only its hash is kept
            secret, obj.prefix, obj.secret_hash = api_key_secret_new()
            super().save_model(request, obj, form, change)
            messages.warning(
                request, f"Copy the key now; it is not shown again and cannot be recovered: {secret}"
            )
            return
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke the selected keys (their next request is refused)")
    def revoke(self, request, queryset) -> None:
        revoked = sum(api_key_revoke(key_id=key.pk) for key in queryset)
        messages.success(request, f"{revoked} key(s) revoked.")


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https")

    class Meta:
        model = WebhookEndpoint
        fields = ("organization", "url", "events", "enabled")

    def clean_url(self):
        try:
            webhook_url_check(self.cleaned_data["url"])
        except ValidationFailed as exc:
            raise forms.ValidationError(exc.message) from None
        return self.cleaned_data["url"]

    def clean_events(self):
        try:
            return webhook_events_clean(self.cleaned_data["events"])
        except ValidationFailed as exc:
            raise forms.ValidationError(exc.message) from None


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    # Why an endpoint was disabled right beside its state, before the columns a narrow window cuts off.
    list_display = ("url", "enabled", "disabled_reason", "failed_deliveries_in_a_row", "organization")
    list_filter = ("enabled", "organization")
    readonly_fields = ("signing_secret", "failed_deliveries_in_a_row", "disabled_reason")
    actions = ["rotate_secret", "enable"]

    @admin.display(description="Signing secret")
    def signing_secret(self, obj: WebhookEndpoint) -> str:
        return obj.secret or "(made on save)"

    def save_model(self, request, obj: WebhookEndpoint, form, change) -> None:
        if not change:
            obj.secret = webhook_secret_new()
        super().save_model(request, obj, form, change)

    def changelist_view(self, request, extra_context=None):
        disabled = WebhookEndpoint.objects.filter(enabled=False).exclude(disabled_reason="").count()
        if disabled:
            messages.error(request, f"{disabled} endpoint(s) were disabled after repeated failures.")
        return super().changelist_view(request, extra_context)

    @admin.action(description="Rotate the signing secret (the old one signs too for 24 h)")
    def rotate_secret(self, request, queryset) -> None:
        for endpoint in queryset:
            webhook_secret_rotate(endpoint_id=endpoint.pk)
        messages.success(request, f"{queryset.count()} secret(s) rotated.")

    @admin.action(description="Enable again (resets the failure count)")
    def enable(self, request, queryset) -> None:
        for endpoint in queryset:
            webhook_endpoint_enable(endpoint_id=endpoint.pk)
        messages.success(request, f"{queryset.count()} endpoint(s) enabled.")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    # The outcome first, the endpoint's URL (long) last.
    list_display = (
        "created_at",
        "event_type",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "endpoint",
    )
    list_filter = ("status", "event_type")
    search_fields = ("message_id", "endpoint__url")
    actions = ["replay"]

    @admin.action(description="Replay (send again with the same webhook-id)")
    def replay(self, request, queryset) -> None:
        for delivery in queryset:
            webhook_delivery_replay(delivery_id=delivery.pk)
        messages.success(request, f"{queryset.count()} delivery(ies) sent again.")
