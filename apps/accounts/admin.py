from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from .models import Device, User


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
