"""The retention purge of generations (apps/generations/retention.py, the daily `generations_purge_task`):
selfies deleted GENERATIONS_INPUT_RETENTION_DAYS after their last use, videos kept until the user deletes
them unless GENERATIONS_OUTPUT_RETENTION_DAYS is set, each deletion audited; deleteAccount still erases
everything at once."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from strawberry.relay import to_base64

from apps.accounts.erasure import user_storage_prefixes
from apps.generations.models import Generation, GenerationStatus, RetentionRecord
from apps.generations.retention import generations_purge_expired
from apps.generations.tasks import generations_purge_task
from apps.storage.backends import get_storage
from apps.storage.models import Upload
from apps.trends.scheduler import JOBS
from tests.fixtures.api import PASSWORD
from tests.fixtures.uploads import UploadFlow
from tests.graphql.generations.helpers import CREATE, a_trend, key, selfie_bytes

pytestmark = pytest.mark.django_db

GENERATION = "query ($id: ID!) { generation(id: $id) { id status video { url } } }"
DAY = dt.timedelta(days=1)


@pytest.fixture
def maker(sign_up, gql, client, settings, shipped_routes, local_storage):
    settings.WELCOME_CREDITS = 20
    settings.GENERATIONS_ROUTE_OVERRIDE = ""
    auth = sign_up()
    token = auth["accessToken"]
    flow = UploadFlow(gql, client, token)
    trend = a_trend(requires="SELFIE")
    storage = get_storage()

    def make(*, status: str = GenerationStatus.SUCCEEDED, finished_days_ago: int = 0) -> Generation:
        """A generation made with a new selfie through the API, then finished (video and poster stored)."""
        target = flow.target("image/jpeg")
        flow.send(target, selfie_bytes())
        request = {"trendSlug": trend.slug, "photoUploadId": target["uploadId"], "idempotencyKey": key()}
        created = gql(CREATE, {"input": request}, token=token)["data"]["createGeneration"]
        assert created["__typename"] == "GenerationPayload", created
        generation = Generation.objects.get(idempotency_key=request["idempotencyKey"])
        if status == GenerationStatus.SUCCEEDED:
            generation.video_key = f"generations/{generation.owner_id}/{generation.pk}/video.mp4"
            generation.poster_key = f"generations/{generation.owner_id}/{generation.pk}/poster.jpg"
            storage.write(generation.video_key, b"mp4", content_type="video/mp4")
            storage.write(generation.poster_key, b"jpg", content_type="image/jpeg")
        generation.status = status
        generation.finished_at = timezone.now() - finished_days_ago * DAY
        generation.save()
        return generation

    make.token = token
    make.flow = flow
    return make


def test_the_purge_runs_daily_from_the_scheduler(settings):
    job = next(job for job in JOBS if job.name == "generations:purge")
    assert job.actor == "apps.generations.tasks:generations_purge_task"
    assert job.interval() == settings.GENERATIONS_PURGE_INTERVAL_SECONDS == 86_400


def test_a_selfie_is_deleted_after_the_input_term_with_an_audit_record(
    maker, settings, gql, django_capture_on_commit_callbacks
):
    assert settings.GENERATIONS_INPUT_RETENTION_DAYS == 30  # the default
    generation = maker()
    upload = Upload.objects.get()
    storage = get_storage()
    assert storage.head(upload.key) is not None

    assert generations_purge_expired(now=timezone.now() + 29 * DAY) == []
    assert Upload.objects.count() == 1 and storage.head(upload.key) is not None

    with (
        pytest.MonkeyPatch.context() as patch,
        django_capture_on_commit_callbacks(execute=True),  # the files go once the rows are gone
    ):
        patch.setattr(timezone, "now", lambda: dt.datetime.now(dt.UTC) + 31 * DAY)
        generations_purge_task()  # the job itself, as the scheduler sends it

    assert not Upload.objects.exists()
    assert storage.head(upload.key) is None
    generation.refresh_from_db()
    assert (generation.image_key, generation.photo_upload_id) == ("", None)
    assert generation.inputs_purged_at is not None
    # The video is an output: kept (and still listed) until the user deletes it.
    assert generation.deleted_at is None and storage.head(generation.video_key) is not None
    record = RetentionRecord.objects.get()
    assert (record.kind, record.user_ref, record.upload_ref, record.term_days) == (
        "INPUT",
        generation.owner_id,
        upload.pk,
        30,
    )
    assert record.generation_refs == [str(generation.pk)] and upload.key in record.keys
    # A second run finds nothing more to do.
    assert generations_purge_expired(now=timezone.now() + 60 * DAY) == []


def test_a_selfie_of_a_generation_still_going_is_kept(maker):
    maker(status=GenerationStatus.QUEUED)
    assert generations_purge_expired(now=timezone.now() + 90 * DAY) == []
    assert Upload.objects.count() == 1


def test_an_upload_no_generation_used_is_deleted_after_the_term(maker):
    target = maker.flow.target("image/jpeg")
    maker.flow.send(target, selfie_bytes())
    assert maker.flow.complete(target["uploadId"])["__typename"] == "UploadPayload"
    [record] = generations_purge_expired(now=timezone.now() + 31 * DAY)
    assert (record.kind, record.generation_refs) == ("INPUT", [])
    assert not Upload.objects.exists()


def test_the_input_term_is_configurable(maker, settings):
    settings.GENERATIONS_INPUT_RETENTION_DAYS = 7
    maker()
    assert generations_purge_expired(now=timezone.now() + 6 * DAY) == []
    assert len(generations_purge_expired(now=timezone.now() + 8 * DAY)) == 1
    assert not Upload.objects.exists()


def test_outputs_are_kept_by_default_and_deleted_after_a_configured_term(
    maker, settings, gql, django_capture_on_commit_callbacks
):
    assert settings.GENERATIONS_OUTPUT_RETENTION_DAYS == 0  # the default: until the user deletes them
    settings.GENERATIONS_INPUT_RETENTION_DAYS = 0  # inputs kept here, to look at outputs alone
    old = maker(finished_days_ago=400)
    assert generations_purge_expired() == []
    assert Generation.objects.get(pk=old.pk).deleted_at is None

    settings.GENERATIONS_OUTPUT_RETENTION_DAYS = 90
    recent = maker(finished_days_ago=10)
    with django_capture_on_commit_callbacks(execute=True):
        [record] = generations_purge_expired()
    assert (record.kind, record.generation_refs, record.term_days) == ("OUTPUT", [str(old.pk)], 90)
    assert set(record.keys) == {old.video_key, old.poster_key}
    storage = get_storage()
    assert storage.head(old.video_key) is None and storage.head(old.poster_key) is None
    assert Generation.objects.get(pk=old.pk).deleted_at is not None
    assert Generation.objects.get(pk=recent.pk).deleted_at is None
    assert storage.head(recent.video_key) is not None


def test_a_draft_whose_selfie_was_purged_cannot_be_finalized(maker, gql):
    draft = maker()
    Generation.objects.filter(pk=draft.pk).update(quality="DRAFT")
    generations_purge_expired(now=timezone.now() + 31 * DAY)
    result = gql(
        """mutation ($id: ID!) { finalizeGeneration(id: $id, quality: STANDARD, idempotencyKey: "f1") {
        __typename ... on Error { code message } ... on ValidationError { field } } }""",
        {"id": to_base64("Generation", draft.pk)},
        token=maker.token,
    )["data"]["finalizeGeneration"]
    assert (result["__typename"], result["field"]) == ("ValidationError", "id")
    assert "deleted 30 days after" in result["message"]


def test_delete_account_still_erases_every_input_and_output_at_once(maker, gql, settings):
    generation = maker()
    user = generation.owner
    result = gql(
        "mutation ($password: String) { deleteAccount(password: $password) { __typename } }",
        {"password": PASSWORD},
        token=maker.token,
    )["data"]["deleteAccount"]
    assert result["__typename"] == "DeletePayload", result
    assert Generation.objects.get(pk=generation.pk).deleted_at is not None
    assert not Upload.objects.filter(user_id=user.pk).exists()
    storage = get_storage()
    assert [key for prefix in user_storage_prefixes(user=user) for key in storage.list_keys(prefix)] == []
