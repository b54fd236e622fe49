import pytest

pytestmark = pytest.mark.django_db


def test_readyz_reports_a_reachable_bucket_as_ok(s3_bucket, client, settings):
    settings.EMBEDDED_WORKER = False  # the subject is the storage check (no worker runs in this test)
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["storage"] == "ok"


def test_readyz_is_unavailable_when_the_bucket_is_missing(s3_bucket, settings, client):
    settings.S3_BUCKET = "bucket-that-does-not-exist"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["checks"]["storage"] == "unavailable"


def test_readyz_reports_the_local_folder_as_ok(local_storage, client):
    assert client.get("/readyz").json()["checks"]["storage"] == "ok"
