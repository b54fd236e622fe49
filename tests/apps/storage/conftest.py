"""Storage fixtures: moto's S3 server on a free port (one per test module) and a fresh bucket per test.

Imported by tests/graphql/storage/conftest.py too, so both folders share them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class S3Bucket:
    client: Any
    name: str
    endpoint: str

    def versions(self, prefix: str = "") -> list[tuple[str, str]]:
        """(key, version id) of every version and delete marker under a prefix."""
        response = self.client.list_object_versions(Bucket=self.name, Prefix=prefix)
        items = [*response.get("Versions", []), *response.get("DeleteMarkers", [])]
        return sorted((item["Key"], item["VersionId"]) for item in items)

    def get(self, key: str) -> tuple[bytes, str]:
        response = self.client.get_object(Bucket=self.name, Key=key)
        return response["Body"].read(), response["ContentType"]


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


@pytest.fixture(scope="module")
def _moto_client(moto_endpoint):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        return s3_client(moto_endpoint)


@pytest.fixture
def s3_bucket(moto_endpoint, _moto_client, settings, monkeypatch) -> S3Bucket:
    """A new versioned bucket on the moto server, and the settings that make the app use it."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    client = _moto_client
    name = f"test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    settings.STORAGE_BACKEND = "s3"
    settings.S3_BUCKET = name
    settings.S3_ENDPOINT_URL = moto_endpoint
    settings.S3_REGION = "us-east-1"
    return S3Bucket(client=client, name=name, endpoint=moto_endpoint)


@pytest.fixture
def local_storage(settings):
    settings.STORAGE_BACKEND = "local"
    return settings.MEDIA_ROOT
