"""The first app versions able to render each section type (editable in admin afterwards)."""

from django.db import migrations

FIRST_VERSIONS = {
    "hero": "1.0",
    "carousel": "1.0",
    "grid": "1.0",
    "category_chips": "1.2",
    "promo": "1.3",
    "continue": "1.5",
    "soul_id_prompt": "1.5",
}


def seed(apps, schema_editor):
    SectionTypeSupport = apps.get_model("trends", "SectionTypeSupport")
    for section_type, version in FIRST_VERSIONS.items():
        SectionTypeSupport.objects.get_or_create(
            section_type=section_type,
            defaults={"min_ios_version": version, "min_android_version": version},
        )


class Migration(migrations.Migration):
    dependencies = [("trends", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
