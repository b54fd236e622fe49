"""Admin of purchases: the catalogue staff curate, and every purchase, plan and store notification with
the store's decoded payload, read-only. A refund outside the stores goes through an action that asks for
a reason and is recorded in the admin's history (LogEntry) and in the credits ledger."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import format_html

from apps.core.admin import ReadOnlyAdmin
from apps.core.errors import ValidationFailed

from .models import Product, Purchase, PurchaseStatus, StoreNotification, Subscription
from .services import purchase_refund_by_staff


def _pretty(payload) -> str:
    return format_html(
        "<pre style='white-space: pre-wrap; max-width: 60em'>{}</pre>",
        json.dumps(payload, indent=2, sort_keys=True, default=str),
    )


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "kind",
        "credits",
        "level",
        "apple_product_id",
        "google_product_id",
        "display_order",
        "is_active",
        "available_from",
        "available_until",
    )
    list_editable = ("display_order", "is_active")
    list_filter = ("kind", "is_active")
    search_fields = ("name", "apple_product_id", "google_product_id")
    fieldsets = (
        (None, {"fields": ("name", "kind", "credits", "level")}),
        ("Store ids", {"fields": ("apple_product_id", "google_product_id")}),
        ("On sale", {"fields": ("display_order", "is_active", "available_from", "available_until")}),
    )

    def has_delete_permission(self, request, obj=None) -> bool:
        # A product that was ever bought stays (purchases point at it); take it off sale instead.
        return obj is None or not obj.purchases.exists()


class RefundForm(forms.Form):
    reason = forms.CharField(max_length=150, help_text="Shown in the user's ledger and the admin history.")


@admin.register(Purchase)
class PurchaseAdmin(ReadOnlyAdmin):
    list_per_page = 50  # pages of 50; these tables only grow
    list_display = (
        "purchased_at",
        "user_history",
        "product",
        "platform",
        "environment",
        "credits",
        "status",
        "credits_taken_back",
        "credits_owed",
        "source",
        "acknowledged_at",
    )
    list_filter = ("status", "platform", "environment", "source", "product")
    search_fields = ("user__email", "transaction_id", "original_id")
    date_hierarchy = "purchased_at"
    list_select_related = ("user", "product")
    actions = ["refund"]
    readonly_fields = ("payload",)
    exclude = ("raw",)

    @admin.display(description="User", ordering="user__email")
    def user_history(self, obj: Purchase) -> str:
        """The user, linking to all of their purchases: their entitlement history."""
        url = reverse("admin:purchases_purchase_changelist") + f"?user__id__exact={obj.user_id}"
        return format_html('<a href="{}" title="All purchases of this user">{}</a>', url, obj.user.email)

    @admin.display(description="Store payload (decoded, verified)")
    def payload(self, obj: Purchase) -> str:
        return _pretty(obj.raw)

    def has_refund_permission(self, request) -> bool:
        return request.user.has_perm("purchases.change_purchase")

    @admin.action(
        description="Refund the selected purchases (takes their credits back)", permissions=["refund"]
    )
    def refund(self, request, queryset):
        form = RefundForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            refunded = 0
            for purchase in queryset.filter(status=PurchaseStatus.GRANTED):
                try:
                    done = purchase_refund_by_staff(purchase=purchase, reason=form.cleaned_data["reason"])
                except ValidationFailed as exc:
                    self.message_user(request, exc.message, messages.ERROR)
                    return None
                self.log_change(
                    request,
                    done,
                    f"Refunded by staff: {form.cleaned_data['reason']} "
                    f"({done.credits_taken_back} credits taken back, {done.credits_owed} owed)",
                )
                refunded += 1
            self.message_user(request, f"Refunded {refunded} purchases.", messages.SUCCESS)
            return None
        return render(
            request,
            "admin/purchases/refund.html",
            {
                **self.admin_site.each_context(request),  # the header's user links, the sidebar
                "form": form,
                "purchases": queryset,
                "opts": self.model._meta,
                "title": "Refund purchases",
            },
        )


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    list_display = (
        "user",
        "product",
        "platform",
        "state",
        "expires_at",
        "will_renew",
        "grace_until",
        "updated_at",
    )
    list_filter = ("state", "platform", "environment", "product")
    search_fields = ("user__email", "original_id")
    readonly_fields = ("charges",)

    @admin.display(description="Purchases of this plan")
    def charges(self, obj: Subscription) -> str:
        url = reverse("admin:purchases_purchase_changelist") + f"?original_id={obj.original_id}"
        return format_html('<a href="{}">Every charge of this plan</a>', url)

    list_select_related = ("user", "product")


@admin.register(StoreNotification)
class StoreNotificationAdmin(ReadOnlyAdmin):
    list_per_page = 50  # pages of 50; these tables only grow
    list_display = (
        "created_at",
        "platform",
        "type",
        "subtype",
        "environment",
        "outcome",
        "user",
        "attempts",
        "detail",
    )
    list_filter = ("platform", "outcome", "type", "environment")
    search_fields = ("notification_id", "user__email", "type")
    list_select_related = ("user",)
    readonly_fields = ("payload",)
    exclude = ("raw",)

    @admin.display(description="Decoded payload")
    def payload(self, obj: StoreNotification) -> str:
        return _pretty(obj.raw)
