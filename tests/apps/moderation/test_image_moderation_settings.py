"""What the backend asks of the GPU worker's image classifier: the folder and thresholds from settings,
a trend's stricter thresholds, nothing when image moderation is off."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from apps.generations.jobs import generation_job
from tests.fixtures.moderation import CLASSIFIER
from tests.graphql.generations.helpers import CREATE, a_trend, generation_from, key

pytestmark = pytest.mark.django_db


@pytest.fixture
def job_of(sign_up, gql, settings, shipped_routes):
    settings.WELCOME_CREDITS = 20
    token = sign_up()["accessToken"]

    def _job(trend):
        variables = {"input": {"trendSlug": trend.slug, "idempotencyKey": key()}}
        created = gql(CREATE, variables, token=token)["data"]["createGeneration"]
        return generation_job(generation_from(created["generation"]["id"]))

    return _job


def test_the_job_names_the_classifier_and_the_thresholds_of_the_settings(job_of, settings):
    settings.MODERATION_IMAGE_MODEL = CLASSIFIER
    settings.MODERATION_IMAGE_THRESHOLDS = {"nsfw": 0.7, "violence": 0.8}
    settings.MODERATION_OUTPUT_FRAMES = 5
    spec = job_of(a_trend(requires="NONE")).moderation
    assert (spec.model, spec.thresholds, spec.output_frames) == (
        CLASSIFIER,
        {"nsfw": 0.7, "violence": 0.8},
        5,
    )


def test_a_trend_may_only_make_the_thresholds_stricter(job_of, settings):
    settings.MODERATION_IMAGE_MODEL = CLASSIFIER
    settings.MODERATION_IMAGE_THRESHOLDS = {"nsfw": 0.7, "violence": 0.8}
    trend = a_trend(requires="NONE", moderation_thresholds={"nsfw": 0.3, "violence": 0.95, "gore": 0.5})
    assert job_of(trend).moderation.thresholds == {"nsfw": 0.3, "violence": 0.8, "gore": 0.5}


def test_without_a_classifier_or_when_disabled_image_moderation_is_off(job_of, settings):
    settings.MODERATION_IMAGE_MODEL = ""
    assert job_of(a_trend(requires="NONE")).moderation is None
    settings.MODERATION_IMAGE_MODEL = CLASSIFIER
    settings.MODERATION_IMAGES_DISABLED = True
    assert job_of(a_trend(requires="NONE")).moderation is None


@pytest.mark.parametrize("value", [{"nsfw": 1.5}, {"nsfw": -0.1}, {"nsfw": "low"}, ["nsfw"], {"nsfw": True}])
def test_a_trend_threshold_outside_0_to_1_is_refused_by_the_admin_form(value):
    trend = a_trend(requires="NONE")
    trend.moderation_thresholds = value
    with pytest.raises(ValidationError) as refused:
        trend.full_clean()
    assert "moderation_thresholds" in refused.value.message_dict
