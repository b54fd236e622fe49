"""Loads the demo catalogue (`fixtures/trends/catalogue.json`): categories, live trends with drawn covers
and previews and synthesized sounds (apps/trends/sound.py), some engagement, and the default home screen.
Idempotent: what exists is left as curators left it; only missing rows and missing media files are added.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from apps.storage.backends import get_storage
from apps.trends.cache import screen_cache_invalidate
from apps.trends.curators import curator_group_ensure
from apps.trends.demo_media import (
    COVER_SIZE,
    PREVIEW_FPS,
    PREVIEW_FRAMES,
    PREVIEW_SIZE,
    draw_cover,
    draw_preview,
)
from apps.trends.media import media_exists, media_save
from apps.trends.models import (
    FIRST_APP_VERSIONS,
    Category,
    FeedSection,
    FeedSectionItem,
    SectionTypeSupport,
    Trend,
    TrendStatus,
)
from apps.trends.rotation import trends_rotate
from apps.trends.services import COUNTERS, current_hour, stats_add
from apps.trends.sound import (
    SOUND_CONTENT_TYPE,
    SOUND_EXTENSION,
    encode_m4a,
    normalize,
    synthesize_tune,
)

CATALOGUE = Path(settings.BASE_DIR) / "fixtures" / "trends" / "catalogue.json"
TREND_FIELDS = {
    "slug", "title", "subtitle", "tags", "prompt_template", "negative_prompt", "camera_body", "lens",
    "focal_length_mm", "aperture", "camera_movement", "movement_strength", "lighting", "mood",
    "aspect_ratios", "default_aspect_ratio", "durations", "default_duration_seconds",
    "preferred_model_route", "default_quality", "price_draft", "price_standard", "price_cinema",
    "requires", "pinned", "sort_weight", "platforms", "min_app_version", "locales",
}  # fmt: skip
DEMO_SOUND_SECONDS = 6.0
DEMO_SOUNDS = 6  # the trends share a few tunes (each takes about a second to make)
DEMO_SOUND_ARTIST = "Diffuse demo band"
DEMO_SOUND_LICENCE = "Synthesized at load time for the demo catalogue; free to use."
SECTION_FIELDS = {
    "section_type", "title", "titles", "subtitle", "subtitles", "source", "max_items", "action_url",
    "platforms", "min_app_version", "locales",
}  # fmt: skip


class Command(BaseCommand):
    help = "Load the demo trends catalogue and default home screen (safe to run again)."

    def add_arguments(self, parser):
        parser.add_argument("--path", default=str(CATALOGUE))
        parser.add_argument("--no-previews", action="store_true", help="skip drawing preview videos")
        parser.add_argument("--no-sounds", action="store_true", help="skip synthesizing trend sounds")

    def handle(self, *args, path: str, no_previews: bool, no_sounds: bool = False, **options):
        data = json.loads(Path(path).read_text())
        now = timezone.now()
        for section_type, version in FIRST_APP_VERSIONS.items():
            SectionTypeSupport.objects.get_or_create(
                section_type=section_type,
                defaults={"min_ios_version": version, "min_android_version": version},
            )
        curator_group_ensure()

        categories = {}
        for row in data["categories"]:
            categories[row["slug"]], _ = Category.objects.get_or_create(
                slug=row["slug"],
                defaults={k: row[k] for k in ("title", "titles", "emoji", "sort_order") if k in row},
            )

        created = sounded = 0
        for row in data["trends"]:
            cover_key = f"trends/covers/{row['slug']}.jpg"
            preview_key = f"trends/previews/{row['slug']}.mp4"
            if not media_exists(cover_key):
                media_save(
                    cover_key, draw_cover(slug=row["slug"], title=row["title"], colors=row["cover_colors"])
                )
            has_preview = media_exists(preview_key)
            if not has_preview and not no_previews:
                clip = draw_preview(colors=row["cover_colors"])
                if clip:
                    media_save(preview_key, clip)
                    has_preview = True
            wants_sound = not no_sounds and row.get("sound") is not False
            existing = Trend.objects.filter(slug=row["slug"]).values("pk", "sound_key", "sound_title").first()
            if existing is not None:
                # Made before trends had sounds (no key and no title: an admin who removed a sound left
                # its title): it gets its demo sound now. Anything else about it is the curators'.
                if wants_sound and not existing["sound_key"] and not existing["sound_title"]:
                    Trend.objects.filter(pk=existing["pk"]).update(**self._sound(row))
                    sounded += 1
                continue
            sound = self._sound(row) if wants_sound else {}
            fields = {k: v for k, v in row.items() if k in TREND_FIELDS}
            if fields.get("aperture") is not None:
                fields["aperture"] = Decimal(str(fields["aperture"]))
            with transaction.atomic():
                trend = Trend(
                    **fields,
                    category=categories[row["category"]],
                    status=TrendStatus.LIVE,
                    published_at=now - timedelta(hours=row.get("published_hours_ago", 24)),
                    cover_image_key=cover_key,
                    cover_width=COVER_SIZE[0],
                    cover_height=COVER_SIZE[1],
                    **(
                        {
                            "preview_video_key": preview_key,
                            "preview_width": PREVIEW_SIZE[0],
                            "preview_height": PREVIEW_SIZE[1],
                            "preview_duration_seconds": PREVIEW_FRAMES / PREVIEW_FPS,
                        }
                        if has_preview
                        else {}
                    ),
                    **sound,
                )
                trend.full_clean()
                trend.save()
                self._seed_engagement(trend, row.get("engagement") or {})
            created += 1

        if not FeedSection.objects.exists():
            trends = {t.slug: t for t in Trend.objects.all()}
            for order, row in enumerate(data["sections"]):
                section = FeedSection(
                    **{k: v for k, v in row.items() if k in SECTION_FIELDS},
                    sort_order=(order + 1) * 10,
                    category=categories.get(row.get("category")),
                )
                if row.get("image_colors"):
                    key = f"trends/promos/{row['key']}.jpg"
                    if not media_exists(key):
                        media_save(
                            key,
                            draw_cover(
                                slug=row["key"],
                                title=row["title"],
                                colors=row["image_colors"],
                                size=(720, 320),
                            ),
                        )
                    section.image_key, section.image_width, section.image_height = key, 720, 320
                section.full_clean()
                section.save()
                for position, slug in enumerate(row.get("items", [])):
                    FeedSectionItem.objects.create(section=section, trend=trends[slug], sort_order=position)

        if created:
            trends_rotate()  # scores from the seeded engagement
        screen_cache_invalidate()
        self.stdout.write(
            f"trends: {Trend.objects.filter(status=TrendStatus.LIVE).count()} live "
            f"({created} new, {sounded} given a sound), {Category.objects.count()} categories, "
            f"{FeedSection.objects.count()} sections"
        )

    def _sound(self, row: dict) -> dict:
        """The trend's demo sound: one of DEMO_SOUNDS tunes, synthesized and normalized like an admin's
        upload the first time one is needed."""
        tune = int(hashlib.sha256(row["slug"].encode()).hexdigest()[:8], 16) % DEMO_SOUNDS
        key = f"trends/sounds/demo-{tune + 1}.{SOUND_EXTENSION}"
        storage = get_storage()
        if storage.head(key) is None:
            samples = normalize(
                synthesize_tune(seed=tune, seconds=DEMO_SOUND_SECONDS),
                target_lufs=settings.TRENDS_SOUND_TARGET_LUFS,
                ceiling_dbtp=settings.TRENDS_SOUND_TRUE_PEAK_DBTP - 0.5,
            )
            storage.write(key, encode_m4a(samples), content_type=SOUND_CONTENT_TYPE)
        return {
            "sound_key": key,
            "sound_title": f"Demo loop {tune + 1}",
            "sound_artist": DEMO_SOUND_ARTIST,
            "sound_licence": DEMO_SOUND_LICENCE,
            "sound_duration_seconds": DEMO_SOUND_SECONDS,
            "sound_loudness_lufs": settings.TRENDS_SOUND_TARGET_LUFS,
        }

    def _seed_engagement(self, trend: Trend, engagement: dict) -> None:
        """Spreads the fixture's last-day engagement over the past 24 hourly buckets, and adds it up."""
        totals = {counter: int(engagement.get(counter, 0)) for counter in COUNTERS}
        if not any(totals.values()):
            return
        hour = current_hour()
        for back in range(24):
            share = {
                counter: total // 24 + (1 if back < total % 24 else 0) for counter, total in totals.items()
            }
            stats_add({trend.pk: share}, hour=hour - back)
        Trend.objects.filter(pk=trend.pk).update(**totals)
