import uuid

from django import forms
from django.contrib import admin, messages
from django.shortcuts import render

from .models import CreditEntry, CreditHold, Wallet
from .tasks import credits_schedule_grant


class GrantForm(forms.Form):
    amount = forms.IntegerField(min_value=1, max_value=100_000)
    reason = forms.CharField(max_length=64, initial="support")


class EntryInline(admin.TabularInline):
    model = CreditEntry
    extra = 0
    can_delete = False
    fields = ("created_at", "kind", "amount", "delta", "balance_after", "reason", "reference")
    readonly_fields = fields
    ordering = ("-created_at",)

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Wallet)
class WalletAdmin(admin.ModelAdmin):
    list_display = ("user", "balance", "held", "updated_at")
    search_fields = ("user__email",)
    readonly_fields = ("user", "balance", "held")
    inlines = [EntryInline]
    actions = ["grant_credits"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # the ledger goes only with its user

    @admin.action(description="Grant credits to the selected users", permissions=["change"])
    def grant_credits(self, request, queryset):
        form = GrantForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            # One batch per confirmation form: posting it twice grants once. Without one, a fresh batch
            # (never a shared empty one, which would make every later batchless grant a duplicate).
            batch = request.POST.get("batch") or uuid.uuid4().hex
            for wallet in queryset.select_related("user"):
                credits_schedule_grant(
                    user=wallet.user,
                    amount=form.cleaned_data["amount"],
                    reason=form.cleaned_data["reason"],
                    reference=f"admin:{batch}:{wallet.user_id}",
                )
            self.message_user(request, f"Granting credits to {queryset.count()} users.", messages.SUCCESS)
            return None
        return render(
            request,
            "admin/credits/grant.html",
            {
                "form": form,
                "wallets": queryset,
                "batch": uuid.uuid4().hex,
                "opts": self.model._meta,
                "title": "Grant credits",
            },
        )


@admin.register(CreditEntry)
class CreditEntryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "wallet", "kind", "amount", "delta", "balance_after", "reason", "reference")
    list_filter = ("kind",)
    search_fields = ("wallet__user__email", "reference")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(CreditHold)
class CreditHoldAdmin(admin.ModelAdmin):
    list_display = ("owner", "wallet", "amount", "status", "created_at", "settled_at")
    list_filter = ("status",)
    search_fields = ("owner", "wallet__user__email")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a deleted hold would leave its credits held forever; settle it through the services
