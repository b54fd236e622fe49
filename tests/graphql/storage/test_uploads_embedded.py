"""Uploads in the embedded mode: signed URLs served by Django, used with real HTTP on a live server."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx
import pytest

from apps.storage.backends import get_storage
from apps.storage.models import Upload, UploadStatus
from tests.apps.storage import images
from tests.fixtures.api import PASSWORD
from tests.fixtures.live import http_graphql
from tests.fixtures.uploads import COMPLETE_UPLOAD, REQUEST_UPLOADS, send_file

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

SIGN_UP = """mutation ($email: String!, $password: String!) {
  signUp(input: {email: $email, password: $password}) { ... on AuthPayload { accessToken } } }"""


class Live:
    def __init__(self, server, settings) -> None:
        self.server = server
        self.settings = settings
        self.token = self.sign_up("live@example.com")

    def sign_up(self, email: str) -> str:
        result = http_graphql(self.server.url, SIGN_UP, {"email": email, "password": PASSWORD})
        return result["data"]["signUp"]["accessToken"]

    def target(self, content_type: str = "image/jpeg") -> dict:
        result = http_graphql(
            self.server.url, REQUEST_UPLOADS, {"count": 1, "contentType": content_type}, self.token
        )["data"]["requestUploads"]
        assert result["__typename"] == "UploadsPayload", result
        return result["uploads"][0]

    def complete(self, upload_id: str) -> dict:
        return http_graphql(self.server.url, COMPLETE_UPLOAD, {"id": upload_id}, self.token)["data"][
            "completeUpload"
        ]

    def stored(self) -> list[str]:
        """Every object in storage, and any temporary file an upload left behind."""
        temp = Path(self.settings.MEDIA_ROOT) / ".tmp"
        leftovers = [path.name for path in temp.iterdir()] if temp.exists() else []
        storage = get_storage()
        return storage.list_keys("incoming/") + storage.list_keys("uploads/") + leftovers


@pytest.fixture
def live(asgi_server, local_storage, settings) -> Live:
    return Live(asgi_server, settings)


def test_upload_to_a_signed_url_on_the_server_then_complete(live):
    target = live.target("image/webp")
    assert target["url"].startswith(f"{live.server.url}/storage/upload/")
    upload = Upload.objects.get()
    assert target["fields"] == [
        {"name": "key", "value": upload.incoming_key},
        {"name": "Content-Type", "value": "image/webp"},
    ]
    assert (target["method"], target["fileField"]) == ("POST", "file")

    data = images.webp((300, 200))
    response = send_file(target, data)
    assert response.status_code == 204
    assert live.stored() == [upload.incoming_key]

    done = live.complete(target["uploadId"])
    assert done["__typename"] == "UploadPayload"
    assert {k: done["upload"][k] for k in ("status", "width", "height", "bytes", "contentType")} == {
        "status": "VERIFIED",
        "width": 300,
        "height": 200,
        "bytes": len(data),
        "contentType": "image/webp",
    }
    assert live.stored() == [upload.key]
    download = httpx.get(done["upload"]["url"])
    assert download.status_code == 200
    assert (download.content, download.headers["content-type"]) == (data, "image/webp")


def test_expired_upload_url_is_refused(live, storage_clock, settings):
    settings.UPLOAD_URL_TTL_SECONDS = 1
    target = live.target()
    storage_clock.advance_past(datetime.fromisoformat(target["expiresAt"]).timestamp())
    response = send_file(target, images.jpeg())
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "AccessDenied"
    assert live.stored() == []


def test_tampered_upload_url_is_refused(live):
    target = live.target()
    signature_end = target["url"][-4:]
    forged = target | {"url": target["url"][:-4] + ("AAAA" if signature_end != "AAAA" else "BBBB")}
    response = send_file(forged, images.jpeg())
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "SignatureDoesNotMatch"
    assert live.stored() == []


@pytest.mark.parametrize(
    "field", [{"Content-Type": "text/html"}, {"Content-Type": "image/png"}, {"key": "uploads/someone/else"}]
)
def test_fields_the_url_was_not_signed_for_are_refused(live, field):
    target = live.target("image/jpeg")
    response = send_file(target, images.jpeg(), **field)
    assert response.status_code == 403
    assert live.stored() == []


@pytest.mark.parametrize(
    ("max_bytes", "size"),
    [
        (10_000, 48_454),  # within the form allowance: stopped while streaming, one chunk past the cap
        (1_000, 200_000),  # Content-Length already says too much: refused before the body is parsed
    ],
)
def test_oversized_body_is_refused(live, settings, max_bytes, size):
    settings.UPLOAD_MAX_BYTES = max_bytes
    target = live.target()
    response = send_file(target, b"\xff\xd8\xff" + b"\0" * (size - 3))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "EntityTooLarge"
    assert live.stored() == []
    # The server is still there for everyone else.
    settings.UPLOAD_MAX_BYTES = 15 * 1024 * 1024
    target = live.target()
    assert send_file(target, images.jpeg()).status_code == 204
    assert live.complete(target["uploadId"])["upload"]["status"] == "VERIFIED"


def test_empty_file_and_missing_file_are_refused(live):
    target = live.target()
    assert send_file(target, b"").status_code == 400
    fields = {item["name"]: item["value"] for item in target["fields"]}
    no_file = httpx.post(target["url"], data=fields, files={"other": ("x", b"data")})
    assert no_file.status_code == 400
    assert live.stored() == []
    assert Upload.objects.get().status == UploadStatus.PENDING


def test_upload_url_only_takes_post(live):
    target = live.target()
    assert httpx.get(target["url"]).status_code == 405
