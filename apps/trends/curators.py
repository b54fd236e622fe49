"""The "Curators" group: staff who edit trends and the home screen, and nothing else.

A curator can add, change and delete trends, categories, sections and section support, and read the
rotation history; they get no permission on users, credits or generations. Rebuilt after every migrate
(so new models' permissions are picked up); safe to run any number of times.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

CURATOR_GROUP = "Curators"

EDITABLE_MODELS = ("trend", "category", "feedsection", "feedsectionitem", "sectiontypesupport")
READ_ONLY_MODELS = ("trendchange", "rotationrun")


def curator_group_ensure() -> Group:
    group, _ = Group.objects.get_or_create(name=CURATOR_GROUP)
    codenames = [
        f"{verb}_{model}" for model in EDITABLE_MODELS for verb in ("view", "add", "change", "delete")
    ]
    codenames += [f"view_{model}" for model in READ_ONLY_MODELS]
    permissions = Permission.objects.filter(content_type__app_label="trends", codename__in=codenames)
    group.permissions.set(permissions)
    return group


def curator_group_ensure_after_migrate(sender, **kwargs) -> None:
    curator_group_ensure()
