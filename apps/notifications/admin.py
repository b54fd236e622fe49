from django.contrib import admin

from .models import PushMessage


@admin.register(PushMessage)
class PushMessageAdmin(admin.ModelAdmin):
    """Read-only: what was sent to whom and how it went. No token is stored here, so none is shown."""

    list_per_page = 50  # pages of 50; these tables only grow
    list_display = ("kind", "user", "platform", "locale", "status", "attempts", "created_at")
    list_filter = ("status", "kind", "platform")
    search_fields = ("user__email", "=id", "collapse_key")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    fields = (
        "id",
        "user",
        "device",
        "platform",
        "locale",
        "kind",
        "title",
        "body",
        "data",
        "collapse_key",
        "status",
        "attempts",
        "error",
        "provider_message_id",
        "claimed_at",
        "next_attempt_at",
        "sent_at",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    # Deleting stays with Django's permission (the rows go with their user, and admin's user deletion
    # checks the delete permission of every related model it would remove).
