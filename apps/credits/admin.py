import uuid

from django import forms
from django.contrib import admin, messages
from django.shortcuts import render

from apps.core.admin import ReadOnlyAdmin

from .models import CreditEntry, CreditHold, Wallet
from .services import credits_revoke
from .tasks import credits_schedule_grant


class GrantForm(forms.Form):
    amount = forms.IntegerField(min_value=1, max_value=100_000)
    reason = forms.CharField(
        max_length=150, initial="support", help_text="Shown in the ledger and the history."
    )


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
    list_display = ("user", "balance", "held", "owed", "updated_at")
    search_fields = ("user__email",)
    readonly_fields = ("user", "balance", "held", "owed", "version")
    inlines = [EntryInline]
    actions = ["grant_credits", "take_back_credits"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # the ledger goes only with its user

    def save_model(self, request, obj, form, change) -> None:
        # Nothing here is typed in: the figures change only through the credits services, under the
        # wallet's row lock. A plain save would write back the figures read a moment before.
        pass

    @admin.action(description="Grant credits to the selected users", permissions=["change"])
    def grant_credits(self, request, queryset):
        form = GrantForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            # One batch per confirmation form: posting it twice grants once. Without one, a fresh batch
            # (never a shared empty one, which would make every later batchless grant a duplicate).
            batch = request.POST.get("batch") or uuid.uuid4().hex
            amount, reason = form.cleaned_data["amount"], form.cleaned_data["reason"]
            for wallet in queryset.select_related("user"):
                credits_schedule_grant(
                    user=wallet.user,
                    amount=amount,
                    reason=reason,
                    reference=f"admin:{batch}:{wallet.user_id}",
                )
                self.log_change(request, wallet, f"Granted {amount} credits: {reason}")
            self.message_user(request, f"Granting credits to {queryset.count()} users.", messages.SUCCESS)
            return None
        return self._amount_form(request, queryset, form, action="grant_credits", verb="Grant")

    @admin.action(description="Take back credits from the selected users", permissions=["change"])
    def take_back_credits(self, request, queryset):
        """A correction (a refund paid outside the stores, a mistaken grant): what the balance cannot cover
        is recorded as owed, never a negative balance."""
        form = GrantForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            batch = request.POST.get("batch") or uuid.uuid4().hex
            amount, reason = form.cleaned_data["amount"], form.cleaned_data["reason"]
            for wallet in queryset.select_related("user"):
                entry = credits_revoke(
                    user=wallet.user,
                    amount=amount,
                    reason=f"staff: {reason}",
                    reference=f"admin-revoke:{batch}:{wallet.user_id}",
                )
                self.log_change(
                    request, wallet, f"Took back {amount} credits: {reason} ({entry.owed_delta} of them owed)"
                )
            self.message_user(request, f"Took credits back from {queryset.count()} users.", messages.SUCCESS)
            return None
        return self._amount_form(request, queryset, form, action="take_back_credits", verb="Take back")

    def _amount_form(self, request, queryset, form, *, action: str, verb: str):
        return render(
            request,
            "admin/credits/grant.html",
            {
                **self.admin_site.each_context(request),  # the header's user links, the sidebar
                "form": form,
                "wallets": queryset,
                "batch": uuid.uuid4().hex,
                "opts": self.model._meta,
                "title": f"{verb} credits",
                "action": action,
                "verb": verb,
            },
        )


@admin.register(CreditEntry)
class CreditEntryAdmin(ReadOnlyAdmin):
    list_per_page = 50  # pages of 50; these tables only grow
    list_display = ("created_at", "wallet", "kind", "amount", "delta", "balance_after", "reason", "reference")
    list_filter = ("kind",)
    search_fields = ("wallet__user__email", "reference")


@admin.register(CreditHold)
class CreditHoldAdmin(ReadOnlyAdmin):
    """Read-only: a deleted hold would leave its credits held forever; settle it through the services."""

    list_per_page = 50  # pages of 50; these tables only grow
    list_display = ("owner", "wallet", "amount", "status", "created_at", "settled_at")
    list_filter = ("status",)
    search_fields = ("owner", "wallet__user__email")
