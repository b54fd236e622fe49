"""Admin pieces every app may use (apps.core imports no other app)."""

from __future__ import annotations

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records that only services write (a ledger, what a store said): staff read them, nobody adds,
    changes or deletes them here."""

    list_per_page = 50  # pages of 50; these tables only grow

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
