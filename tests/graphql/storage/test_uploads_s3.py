"""Uploads in services mode: presigned POSTs to S3 (moto's server, real HTTP), checked by the server.

moto stores whatever is POSTed and does not enforce the policy, which is exactly the case the server's
own checks are for: these tests prove an oversized or non-image object is refused and deleted anyway.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from strawberry.relay import from_base64

from apps.storage.backends import get_storage
from apps.storage.models import Upload, UploadStatus
from apps.storage.selectors import upload_prefixes_for_user
from tests.apps.storage import images

pytestmark = pytest.mark.django_db

HTML = b"<!doctype html><html><body><script>alert(1)</script></body></html>"


def _upload(target: dict) -> Upload:
    return Upload.objects.get(pk=from_base64(target["uploadId"])[1])


def test_upload_with_a_presigned_post_then_complete(flow, s3_bucket, settings):
    result = flow.request(2, "image/jpeg")
    assert result["__typename"] == "UploadsPayload"
    assert len(result["uploads"]) == 2
    for target in result["uploads"]:
        assert target["url"] == f"{s3_bucket.endpoint}/{s3_bucket.name}"
        assert (target["method"], target["fileField"], target["headers"]) == ("POST", "file", [])
        assert target["maxBytes"] == settings.UPLOAD_MAX_BYTES
        assert target["upload"] == {
            "id": target["uploadId"],
            "status": "PENDING",
            "contentType": "image/jpeg",
        }

    target = result["uploads"][0]
    data = images.jpeg((640, 480))
    flow.send(target, data)
    done = flow.complete(target["uploadId"])
    assert done == {
        "__typename": "UploadPayload",
        "upload": {
            "id": target["uploadId"],
            "status": "VERIFIED",
            "contentType": "image/jpeg",
            "bytes": len(data),
            "width": 640,
            "height": 480,
            "rejectReason": None,
            "url": done["upload"]["url"],
        },
    }
    # The checked bytes now live under a key only the server writes; the app's copy is gone for good.
    upload = _upload(target)
    assert s3_bucket.get(upload.key) == (data, "image/jpeg")
    assert [key for key, _ in s3_bucket.versions()] == [upload.key]
    assert httpx.get(done["upload"]["url"]).content == data
    # The other upload is still waiting for its file.
    assert _upload(result["uploads"][1]).status == UploadStatus.PENDING


def test_presigned_policy_pins_key_type_size_and_expiry(flow, s3_bucket, settings):
    settings.UPLOAD_MAX_BYTES = 5_000_000
    target = flow.target("image/png")
    fields = {item["name"]: item["value"] for item in target["fields"]}
    policy = json.loads(base64.b64decode(fields["policy"]))
    conditions = policy["conditions"]
    upload = _upload(target)

    assert upload.incoming_key == f"incoming/{upload.user_id}/{upload.id}"
    assert upload.key == f"uploads/{upload.user_id}/{upload.id}"
    assert fields["key"] == upload.incoming_key
    assert {"key": upload.incoming_key} in conditions
    assert {"bucket": s3_bucket.name} in conditions
    assert {"Content-Type": "image/png"} in conditions
    assert ["content-length-range", 1, 5_000_000] in conditions
    expiration = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert timedelta(minutes=14) < expiration - datetime.now(UTC) <= timedelta(minutes=15)
    assert datetime.fromisoformat(target["expiresAt"]) >= expiration
    # S3 refuses form fields that no condition names, so the app cannot add an ACL or another key.
    named = {name.lower() for condition in conditions if isinstance(condition, dict) for name in condition}
    assert {name.lower() for name in fields} - {"policy", "x-amz-signature"} <= named


def test_upload_url_lifetime_is_capped_at_15_minutes(flow, s3_bucket, settings):
    settings.UPLOAD_URL_TTL_SECONDS = 3600
    target = flow.target()
    policy = json.loads(base64.b64decode({f["name"]: f["value"] for f in target["fields"]}["policy"]))
    expiration = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert expiration - datetime.now(UTC) <= timedelta(minutes=15)


def test_oversized_file_is_rejected_and_deleted(flow, s3_bucket, settings):
    settings.UPLOAD_MAX_BYTES = 20_000
    target = flow.target("image/jpeg")
    data = images.jpeg((200, 200), noise=True, quality=95)
    assert len(data) > 20_000
    flow.send(target, data)  # moto takes it despite content-length-range
    upload = _upload(target)
    assert s3_bucket.versions(upload.incoming_key) != []

    result = flow.complete(target["uploadId"])
    assert result == {
        "__typename": "UploadInvalid",
        "code": "UPLOAD_INVALID",
        "reason": "TOO_LARGE",
        "field": "uploadId",
        "message": "The file is larger than 19 KB. Upload a smaller photo.",
    }
    assert s3_bucket.versions() == []
    upload.refresh_from_db()
    assert (upload.status, upload.reject_reason) == (UploadStatus.REJECTED, "TOO_LARGE")


@pytest.mark.parametrize("content_type_field", ["image/jpeg", "text/html"])
def test_html_file_is_rejected_and_deleted(flow, s3_bucket, content_type_field):
    target = flow.target("image/jpeg")
    flow.send(target, HTML, filename="photo.jpg", **{"Content-Type": content_type_field})
    result = flow.complete(target["uploadId"])
    assert result["__typename"] == "UploadInvalid"
    assert (result["code"], result["reason"]) == ("UPLOAD_INVALID", "UNSUPPORTED_TYPE")
    assert "JPEG, PNG, HEIC or WebP" in result["message"]
    assert s3_bucket.versions() == []


def test_completing_again_gives_the_same_answer(flow, s3_bucket):
    target, first = flow.upload(images.png((32, 32)), "image/png")
    assert first["upload"]["status"] == "VERIFIED"
    again = flow.complete(target["uploadId"])
    # Download URLs are signed afresh on each read; everything else is the same.
    assert again["upload"].pop("url") and first["upload"].pop("url")
    assert again == first

    rejected = flow.target("image/png")
    flow.send(rejected, HTML)
    refused = flow.complete(rejected["uploadId"])
    assert refused["reason"] == "UNSUPPORTED_TYPE"
    assert flow.complete(rejected["uploadId"]) == refused


def test_a_second_post_after_verification_changes_nothing(flow, s3_bucket):
    """The upload URL stays valid until it expires; what the server checked is what it keeps."""
    data = images.jpeg((64, 64))
    target, done = flow.upload(data)
    assert done["upload"]["status"] == "VERIFIED"
    flow.send(target, HTML)  # the same presigned POST, used again
    again = flow.complete(target["uploadId"])
    assert again["upload"]["status"] == "VERIFIED"
    upload = _upload(target)
    assert s3_bucket.get(upload.key) == (data, "image/jpeg")
    # The stray object stays under the owner's prefixes, where erasure finds and removes it.
    storage = get_storage()
    prefixes = upload_prefixes_for_user(user=upload.user)
    assert sorted(key for prefix in prefixes for key in storage.list_keys(prefix)) == sorted(
        {key for key, _ in s3_bucket.versions()}
    )
    assert sorted(key for key, _ in s3_bucket.versions()) == [upload.incoming_key, upload.key]
    for prefix in prefixes:
        storage.delete_prefix(prefix)
    assert s3_bucket.versions() == []
