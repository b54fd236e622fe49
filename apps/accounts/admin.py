from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from .models import AccountErasure, Device, User


class DeviceInline(admin.TabularInline):
    model = Device
    extra = 0
    fields = ("platform", "app_version", "locale", "last_seen_at")
    readonly_fields = fields
    can_delete = True


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ("-date_joined",)
    list_display = ("email", "is_active", "is_staff", "date_joined")
    search_fields = ("email",)
    list_filter = ("is_active", "is_staff")
    readonly_fields = ("id", "date_joined", "last_login", "firebase_uid")
    fieldsets = (
        (None, {"fields": ("id", "email", "password", "firebase_uid")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)
    inlines = [DeviceInline]


@admin.register(AccountErasure)
class AccountErasureAdmin(admin.ModelAdmin):
    """Audit records of account deletions (counts only, no personal data): read-only."""

    list_display = ("created_at", "user_ref", "trigger")
    readonly_fields = ("user_ref", "trigger", "removed", "created_at")
    search_fields = ("user_ref",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
