"""The upload flow through the API: requestUploads, a plain HTTP multipart POST, completeUpload."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.apps.storage.conftest import _moto_client, local_storage, moto_endpoint, s3_bucket  # noqa: F401

REQUEST_UPLOADS = """
mutation ($count: Int!, $contentType: String!) {
  requestUploads(input: {count: $count, contentType: $contentType}) {
    __typename
    ... on UploadsPayload {
      uploads {
        uploadId url method fields { name value } headers { name value } fileField expiresAt maxBytes
        upload { id status contentType }
      }
    }
    ... on ValidationError { code message field }
    ... on RateLimited { code message retryAfterSeconds }
  }
}
"""

COMPLETE_UPLOAD = """
mutation ($id: ID!) {
  completeUpload(uploadId: $id) {
    __typename
    ... on UploadPayload { upload { id status contentType bytes width height rejectReason url } }
    ... on UploadInvalid { code message field reason }
    ... on NotFound { code message field }
  }
}
"""


def send_file(target: dict, data: bytes, *, filename: str = "photo", client=None, **overrides: Any):
    """POSTs a file to an upload target the way the app does: the fields in order, then the file.

    Targets on the Django test server ("testserver") go through Django's test client; any other URL
    (moto's server, a live uvicorn server) gets a real HTTP request. `overrides` replace fields.
    """
    fields = {item["name"]: item["value"] for item in target["fields"]}
    fields.update(overrides)
    assert target["method"] == "POST"
    if urlparse(target["url"]).hostname == "testserver":
        body = {**fields, target["fileField"]: SimpleUploadedFile(filename, data, "application/octet-stream")}
        return client.post(target["url"], body)
    headers = {item["name"]: item["value"] for item in target["headers"]}
    return httpx.post(
        target["url"],
        data=fields,
        files={target["fileField"]: (filename, data, "application/octet-stream")},
        headers=headers,
        timeout=30,
    )


class UploadFlow:
    def __init__(self, gql, client, token: str) -> None:
        self.gql = gql
        self.client = client
        self.token = token

    def request(self, count: int = 1, content_type: str = "image/jpeg", token: str | None = None) -> dict:
        variables = {"count": count, "contentType": content_type}
        return self.gql(REQUEST_UPLOADS, variables, token=token or self.token)["data"]["requestUploads"]

    def target(self, content_type: str = "image/jpeg") -> dict:
        result = self.request(1, content_type)
        assert result["__typename"] == "UploadsPayload", result
        return result["uploads"][0]

    def send(self, target: dict, data: bytes, **overrides: Any):
        response = send_file(target, data, client=self.client, **overrides)
        assert response.status_code == 204, (response.status_code, response.content)
        return response

    def complete(self, upload_id: str, token: str | None = None) -> dict:
        return self.gql(COMPLETE_UPLOAD, {"id": upload_id}, token=token or self.token)["data"][
            "completeUpload"
        ]

    def upload(self, data: bytes, content_type: str = "image/jpeg") -> tuple[dict, dict]:
        """Request, send and complete one file: (the target, the completeUpload result)."""
        target = self.target(content_type)
        self.send(target, data)
        return target, self.complete(target["uploadId"])


@pytest.fixture
def flow(gql, client, sign_up) -> UploadFlow:
    return UploadFlow(gql, client, sign_up()["accessToken"])


@pytest.fixture(params=["local", "s3"])
def backend(request) -> str:
    """Runs a test once with each storage backend."""
    request.getfixturevalue("s3_bucket" if request.param == "s3" else "local_storage")
    return request.param
