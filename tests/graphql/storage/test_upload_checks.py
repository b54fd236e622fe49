"""What completeUpload refuses, and what requestUploads refuses, with each storage backend.

The local backend is reached through Django's test client (the same view and middleware as over a
socket; tests/graphql/storage/test_uploads_embedded.py covers real HTTP), S3 through moto's server.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from PIL import Image
from strawberry.relay import from_base64, to_base64

from apps.storage.backends import get_storage
from apps.storage.models import Upload, UploadStatus
from tests.apps.storage import images
from tests.fixtures.uploads import REQUEST_UPLOADS, UploadFlow

pytestmark = pytest.mark.django_db


def _upload(target: dict) -> Upload:
    return Upload.objects.get(pk=from_base64(target["uploadId"])[1])


def _run_out(target: dict) -> None:
    """Its time runs out: the upload's expiry (the target's expiresAt) is moved into the past, instead of
    waiting for it."""
    upload = _upload(target)
    assert upload.expires_at == datetime.fromisoformat(target["expiresAt"])
    Upload.objects.filter(pk=upload.pk).update(expires_at=upload.expires_at - timedelta(days=1))


def _nothing_stored() -> bool:
    storage = get_storage()
    return storage.list_keys("uploads/") == storage.list_keys("incoming/") == []


# --- requestUploads -------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, -1, 21])
def test_count_outside_1_to_20_is_a_validation_error(flow, backend, count):
    result = flow.request(count)
    assert result == {
        "__typename": "ValidationError",
        "code": "VALIDATION",
        "field": "count",
        "message": "Ask for 1 to 20 uploads at a time.",
    }
    assert Upload.objects.count() == 0


def test_twenty_uploads_at_once_is_allowed(flow, backend):
    result = flow.request(20, "image/heic")
    assert len(result["uploads"]) == 20
    assert len({target["uploadId"] for target in result["uploads"]}) == 20
    assert Upload.objects.filter(status=UploadStatus.PENDING, content_type="image/heic").count() == 20


@pytest.mark.parametrize("content_type", ["image/gif", "image/tiff", "text/html", "image/svg+xml", ""])
def test_unsupported_content_type_is_a_validation_error(flow, backend, content_type):
    result = flow.request(1, content_type)
    assert result["__typename"] == "ValidationError"
    assert (result["code"], result["field"]) == ("VALIDATION", "contentType")
    assert "image/jpeg, image/png, image/heic or image/webp" in result["message"]
    assert Upload.objects.count() == 0


def test_upload_issuance_is_rate_limited_per_user(flow, backend, settings, gql, sign_up):
    settings.UPLOAD_ISSUE_MAX_PER_WINDOW = 5
    assert flow.request(3)["__typename"] == "UploadsPayload"
    refused = flow.request(3)
    assert refused["__typename"] == "RateLimited"
    assert refused["code"] == "RATE_LIMITED"
    assert 0 < refused["retryAfterSeconds"] <= settings.UPLOAD_ISSUE_WINDOW_SECONDS
    assert Upload.objects.count() == 3
    assert len(flow.request(2)["uploads"]) == 2  # what is left of the allowance
    assert flow.request(1)["__typename"] == "RateLimited"
    other = UploadFlow(gql, flow.client, sign_up()["accessToken"])
    assert other.request(5)["__typename"] == "UploadsPayload"


def test_aliased_requests_each_count_against_the_limit(flow, backend, settings, gql):
    settings.UPLOAD_ISSUE_MAX_PER_WINDOW = 4
    body = REQUEST_UPLOADS.split("{", 1)[1].rsplit("}", 1)[0]  # the selection, reused under aliases
    query = (
        "mutation ($count: Int!, $contentType: String!) {"
        + "\n".join(f"a{i}: {body.strip()}" for i in range(3))
        + "}"
    )
    data = gql(query, {"count": 2, "contentType": "image/jpeg"}, token=flow.token)["data"]
    assert [data[f"a{i}"]["__typename"] for i in range(3)] == [
        "UploadsPayload",
        "UploadsPayload",
        "RateLimited",
    ]
    assert Upload.objects.count() == 4


def test_signed_out_callers_get_unauthenticated(gql, backend):
    result = gql(REQUEST_UPLOADS, {"count": 1, "contentType": "image/jpeg"})
    assert result["data"] is None
    assert result["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert Upload.objects.count() == 0


# --- completeUpload: accepted ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "make"),
    [
        ("image/jpeg", images.jpeg),
        ("image/png", images.png),
        ("image/webp", images.webp),
        ("image/heic", images.heic),
    ],
)
def test_every_allowed_format_is_verified(flow, backend, content_type, make):
    data = make((120, 90))
    target, result = flow.upload(data, content_type)
    assert result["__typename"] == "UploadPayload"
    upload = result["upload"]
    assert (upload["status"], upload["contentType"]) == ("VERIFIED", content_type)
    assert (upload["width"], upload["height"], upload["bytes"]) == (120, 90, len(data))
    stored = get_storage().head(_upload(target).key)
    assert (stored.size, stored.content_type) == (len(data), content_type)


def test_size_is_reported_as_displayed_after_the_exif_orientation(flow, backend):
    _, result = flow.upload(images.rotated_jpeg((64, 48)))
    assert (result["upload"]["width"], result["upload"]["height"]) == (48, 64)


def test_uploads_are_nodes_visible_to_their_owner_only(flow, backend, gql, sign_up):
    target, _ = flow.upload(images.png((10, 10)), "image/png")
    query = "query ($id: ID!) { node(id: $id) { __typename ... on Upload { id status width } } }"
    mine = gql(query, {"id": target["uploadId"]}, token=flow.token)["data"]["node"]
    assert mine == {"__typename": "Upload", "id": target["uploadId"], "status": "VERIFIED", "width": 10}
    stranger = sign_up()["accessToken"]
    assert gql(query, {"id": target["uploadId"]}, token=stranger)["data"]["node"] is None


# --- completeUpload: refused ----------------------------------------------------------------------


def _refused(flow, data: bytes, content_type: str = "image/jpeg") -> dict:
    """Sends `data` for an upload of `content_type` and returns completeUpload's error."""
    target = flow.target(content_type)
    flow.send(target, data)
    result = flow.complete(target["uploadId"])
    assert result["__typename"] == "UploadInvalid", result
    assert (result["code"], result["field"]) == ("UPLOAD_INVALID", "uploadId")
    upload = _upload(target)
    assert (upload.status, upload.reject_reason) == (UploadStatus.REJECTED, result["reason"])
    assert _nothing_stored()  # the refused object is deleted
    return result


def test_decompression_bomb_is_refused_and_everyone_else_carries_on(flow, backend, gql, sign_up):
    bomb = images.png_declaring(20000, 20000)
    assert len(bomb) < 50_000
    result = _refused(flow, bomb, "image/png")
    assert result["reason"] == "TOO_MANY_PIXELS"
    assert result["message"] == "The image has too many pixels. Upload a photo of at most 40 megapixels."
    other = UploadFlow(gql, flow.client, sign_up()["accessToken"])
    assert other.upload(images.jpeg())[1]["upload"]["status"] == "VERIFIED"


def test_pixel_counts_pillow_only_warns_about_are_refused_too(flow, backend, settings):
    # 100 megapixels: above Pillow's warning threshold, below the one where it raises by itself.
    settings.UPLOAD_MAX_PIXELS = 10**9
    with pytest.warns(Image.DecompressionBombWarning):
        result = _refused(flow, images.png_declaring(10000, 10000), "image/png")
    assert result["reason"] == "TOO_MANY_PIXELS"


def test_pixel_cap_follows_the_setting(flow, backend, settings):
    settings.UPLOAD_MAX_PIXELS = 64 * 48 - 1
    assert _refused(flow, images.jpeg((64, 48)))["reason"] == "TOO_MANY_PIXELS"
    settings.UPLOAD_MAX_PIXELS = 64 * 48
    assert flow.upload(images.jpeg((64, 48)))[1]["upload"]["status"] == "VERIFIED"


def test_truncated_jpeg_is_refused_as_damaged(flow, backend):
    result = _refused(flow, images.truncated_jpeg())
    assert result["reason"] == "CORRUPT"
    assert result["message"] == "The file is damaged or incomplete. Upload the photo again."


@pytest.mark.parametrize("make", [images.gif, images.tiff], ids=["gif", "tiff"])
def test_other_image_formats_named_jpg_are_refused(flow, backend, make):
    target = flow.target("image/jpeg")
    flow.send(target, make(), filename="photo.jpg")
    result = flow.complete(target["uploadId"])
    assert (result["__typename"], result["reason"]) == ("UploadInvalid", "UNSUPPORTED_TYPE")
    assert _nothing_stored()


def test_avif_is_not_taken_for_heic(flow, backend):
    # Both are ISO base media files with an `ftyp` box; only HEVC-coded HEIF brands pass.
    assert _refused(flow, images.avif(), "image/heic")["reason"] == "UNSUPPORTED_TYPE"


def test_a_png_sent_as_jpeg_is_a_type_mismatch(flow, backend):
    result = _refused(flow, images.png(), "image/jpeg")
    assert result["reason"] == "TYPE_MISMATCH"
    assert "Request a new upload with contentType image/png" in result["message"]


def test_animated_images_are_refused(flow, backend):
    assert _refused(flow, images.animated_png(), "image/png")["reason"] == "ANIMATED"


def test_another_users_upload_is_not_found_and_left_alone(flow, backend, gql, sign_up):
    target = flow.target()
    flow.send(target, images.jpeg())
    stranger = sign_up()["accessToken"]
    result = flow.complete(target["uploadId"], token=stranger)
    assert result == {
        "__typename": "NotFound",
        "code": "NOT_FOUND",
        "field": "uploadId",
        "message": "This upload does not exist.",
    }
    assert _upload(target).status == UploadStatus.PENDING
    assert get_storage().list_keys("incoming/") == [_upload(target).incoming_key]
    assert flow.complete(target["uploadId"])["upload"]["status"] == "VERIFIED"


@pytest.mark.parametrize(
    "upload_id",
    [
        "not-a-global-id",
        to_base64("Upload", "not-a-uuid"),
        to_base64("Upload", "00000000-0000-0000-0000-000000000000"),
        to_base64("User", "00000000-0000-0000-0000-000000000000"),
    ],
)
def test_unknown_upload_ids_are_not_found(flow, backend, upload_id):
    result = flow.complete(upload_id)
    assert (result["__typename"], result["code"]) == ("NotFound", "NOT_FOUND")


def test_completing_before_sending_the_file_says_to_send_it_first(flow, backend):
    target = flow.target()
    result = flow.complete(target["uploadId"])
    assert result == {
        "__typename": "UploadInvalid",
        "code": "UPLOAD_INVALID",
        "field": "uploadId",
        "reason": "NOT_UPLOADED",
        "message": "The file has not arrived. Send it to the upload URL first, then complete the upload.",
    }
    assert _upload(target).status == UploadStatus.PENDING  # nothing recorded: it can still arrive
    flow.send(target, images.jpeg())
    assert flow.complete(target["uploadId"])["upload"]["status"] == "VERIFIED"


def test_an_upload_whose_file_never_came_expires(flow, backend, settings):
    settings.UPLOAD_URL_TTL_SECONDS = 1
    target = flow.target()
    _run_out(target)
    result = flow.complete(target["uploadId"])
    assert (result["__typename"], result["reason"]) == ("UploadInvalid", "EXPIRED")
    assert "Request a new upload" in result["message"]
    assert _upload(target).status == UploadStatus.REJECTED
