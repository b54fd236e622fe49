"""Worker storage without Django: a local folder in the backend's layout, and S3 on moto's server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from gpu_worker.storage import (
    LocalStorage,
    MissingObject,
    ObjectTooLarge,
    S3Storage,
    StorageError,
    default_media_root,
    storage_from_env,
)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint, monkeypatch) -> S3Storage:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    bucket = f"gpu-{uuid.uuid4().hex[:12]}"
    storage = storage_from_env(
        {
            "STORAGE_BACKEND": "s3",
            "S3_BUCKET": bucket,
            "S3_ENDPOINT_URL": moto_endpoint,
            "S3_REGION": "us-east-1",
        }
    )
    assert isinstance(storage, S3Storage)
    storage.client.create_bucket(Bucket=bucket)
    return storage


@pytest.fixture
def local(tmp_path) -> LocalStorage:
    storage = storage_from_env({"STORAGE_BACKEND": "local", "MEDIA_ROOT": str(tmp_path / "media")})
    assert isinstance(storage, LocalStorage)
    return storage


@pytest.fixture(params=["local", "s3"])
def any_storage(request):
    return request.getfixturevalue(request.param)


def test_bytes_and_files_round_trip_by_key(any_storage, tmp_path):
    any_storage.write("uploads/u1/selfie", b"\xff\xd8 a jpeg", content_type="image/jpeg")
    source = tmp_path / "video.mp4"
    source.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 64)

    written = any_storage.write_file("generations/g1/a1/video.mp4", source, content_type="video/mp4")

    assert written == source.stat().st_size
    assert any_storage.read("uploads/u1/selfie") == b"\xff\xd8 a jpeg"
    assert any_storage.read("generations/g1/a1/video.mp4") == source.read_bytes()
    assert any_storage.exists("generations/g1/a1/video.mp4")
    assert not any_storage.exists("generations/g1/a1/poster.jpg")


def test_a_missing_key_and_an_oversized_object_are_refused(any_storage):
    with pytest.raises(MissingObject):
        any_storage.read("uploads/u1/nothing")
    any_storage.write("uploads/u1/big", b"x" * 101, content_type="application/octet-stream")
    with pytest.raises(ObjectTooLarge):
        any_storage.read("uploads/u1/big", max_bytes=100)
    assert any_storage.read("uploads/u1/big", max_bytes=101) == b"x" * 101


def test_a_deleted_object_is_gone_and_deleting_nothing_is_fine(any_storage):
    any_storage.write("generations/g1/a1/poster.jpg", b"\xff\xd8", content_type="image/jpeg")

    any_storage.delete("generations/g1/a1/poster.jpg")
    any_storage.delete("generations/g1/a1/poster.jpg")

    assert not any_storage.exists("generations/g1/a1/poster.jpg")


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../b", ".hidden", "a//b", ""])
def test_keys_cannot_climb_out(any_storage, key):
    with pytest.raises(ValueError, match="not a valid storage key"):
        any_storage.write(key, b"x", content_type="text/plain")
    with pytest.raises(ValueError, match="not a valid storage key"):
        any_storage.read(key)


def test_local_files_sit_where_the_backend_reads_them(local):
    local.write("generations/g1/a1/poster.jpg", b"jpeg", content_type="image/jpeg")
    assert (local.root / "generations/g1/a1/poster.jpg").read_bytes() == b"jpeg"
    meta = json.loads((local.root / ".meta/generations/g1/a1/poster.jpg.json").read_text())
    assert meta == {"content_type": "image/jpeg"}
    assert not [p for p in (local.root / ".tmp").iterdir()]  # written through .tmp, nothing left


def test_s3_objects_carry_their_content_type(s3, tmp_path):
    source = tmp_path / "v.mp4"
    source.write_bytes(b"mp4")
    s3.write_file("generations/g1/a1/video.mp4", source, content_type="video/mp4")
    head = s3.client.head_object(Bucket=s3.bucket, Key="generations/g1/a1/video.mp4")
    assert head["ContentType"] == "video/mp4" and head["ContentLength"] == 3


def test_settings_come_from_the_backends_variables(tmp_path):
    assert default_media_root({"MEDIA_ROOT": "/srv/media"}).as_posix() == "/srv/media"
    assert default_media_root({"VAR_DIR": "/srv/var"}).as_posix() == "/srv/var/media"
    assert default_media_root({}).name == "media"
    with pytest.raises(StorageError, match="S3_BUCKET"):
        storage_from_env({"STORAGE_BACKEND": "s3"})
    with pytest.raises(StorageError, match="unknown STORAGE_BACKEND"):
        storage_from_env({"STORAGE_BACKEND": "ftp"})
