"""/v1 through a live server: API keys (unknown, revoked, wrong scope), problem details naming the field,
create/get/list/cancel/quote on the same services as GraphQL, batches whose bad items fail alone, and
organizations that cannot see each other's generations."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from apps.credits.models import Wallet
from apps.generations.models import Generation
from apps.organizations.models import ApiKey
from apps.organizations.services import api_key_create, api_key_revoke
from rest_api.api import OPENAPI_PATH, openapi_document

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = {"prompt": "a lighthouse at dawn, slow dolly in", "quality": "DRAFT", "duration_seconds": 5}


def balance(organization) -> tuple[int, int]:
    row = Wallet.objects.filter(user=organization.account).values_list("balance", "held").first()
    return row or (0, 0)


def assert_problem(response: httpx.Response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert (body["status"], body["code"]) == (status, code)
    assert body["type"] and body["title"] and body["detail"]
    if field is not None:
        assert body["field"] == field, body
    return body


def test_unknown_revoked_and_missing_keys_get_401_and_a_wrong_scope_403(api):
    client = api()
    ok = client.get("/generations")
    assert ok.status_code == 200 and ok.json() == {"data": [], "next_cursor": None}

    for headers in ({}, {"Authorization": "Bearer dfk_live_nope_nope"}, {"Authorization": "Bearer x"}):
        response = httpx.get(f"{client.base}/v1/generations", headers=headers, timeout=30)
        assert_problem(response, 401, "UNAUTHENTICATED")
        assert response.headers["www-authenticate"].startswith("Bearer")

    key = ApiKey.objects.get(organization=client.organization)
    assert api_key_revoke(key_id=key.pk) is True
    assert_problem(client.get("/generations"), 401, "UNAUTHENTICATED")
    assert_problem(
        client.post("/generations", json=PROMPT, headers={"Idempotency-Key": "k1"}), 401, "UNAUTHENTICATED"
    )
    assert not Generation.objects.exists()

    _, read_only = api_key_create(
        organization=client.organization, name="reader", scopes=["generations:read"]
    )
    client.key = read_only
    assert client.get("/generations").status_code == 200
    body = assert_problem(
        client.post("/generations", json=PROMPT, headers={"Idempotency-Key": "k1"}), 403, "FORBIDDEN"
    )
    assert "generations:write" in body["detail"]
    assert not Generation.objects.exists() and balance(client.organization) == (1000, 0)


def test_a_key_is_counted_and_rate_limited_per_key(api):
    client = api(requests_per_minute=3)
    for _ in range(3):
        assert client.get("/generations").status_code == 200
    response = client.get("/generations")
    assert_problem(response, 429, "RATE_LIMITED")
    assert int(response.headers["retry-after"]) > 0
    key = ApiKey.objects.get(organization=client.organization)
    assert key.request_count == 3 and key.last_used_at is not None


def test_malformed_bodies_name_the_field_and_charge_nothing(api):
    client = api()
    key = {"Idempotency-Key": str(uuid.uuid4())}
    assert_problem(
        client.post("/generations", json={**PROMPT, "quality": "ULTRA"}, headers=key),
        422,
        "VALIDATION",
        "quality",
    )
    assert_problem(
        client.post("/generations", json={**PROMPT, "seed": -1}, headers=key), 422, "VALIDATION", "seed"
    )
    assert_problem(client.post("/generations", content=b"{not json", headers=key), 400, "VALIDATION")
    assert_problem(client.post("/generations", json=[1, 2], headers=key), 422, "VALIDATION")
    assert_problem(client.post("/generations", json=PROMPT), 422, "VALIDATION", "Idempotency-Key")
    assert_problem(
        client.post("/generations", json={"quality": "DRAFT"}, headers=key), 422, "VALIDATION", "trend_slug"
    )
    assert_problem(
        client.post("/generations", json={**PROMPT, "trend_slug": "no-such"}, headers=key),
        404,
        "NOT_FOUND",
        "trend_slug",
    )
    assert_problem(
        client.post("/generations", json={**PROMPT, "photo_upload_id": str(uuid.uuid4())}, headers=key),
        404,
        "NOT_FOUND",
        "photo_upload_id",
    )
    assert_problem(
        client.post("/generations", json={**PROMPT, "duration_seconds": 7}, headers=key),
        422,
        "UNSUPPORTED_OPTION",
        "duration_seconds",
    )
    assert_problem(client.get("/generations?limit=0"), 422, "VALIDATION", "limit")
    assert_problem(client.get("/generations?cursor=%%%"), 422, "VALIDATION", "cursor")
    assert_problem(client.get("/generations/not-a-uuid"), 404, "NOT_FOUND", "id")
    assert not Generation.objects.exists() and balance(client.organization) == (1000, 0)


def test_create_get_list_cancel_and_quote_use_the_organizations_wallet(api):
    client = api()
    quote = client.post("/quotes", json=PROMPT)
    assert quote.status_code == 200, quote.text
    price = quote.json()["credits"]
    assert quote.json()["balance"] == 1000 and quote.json()["route"] == "tiny-wan" and price > 0

    key = {"Idempotency-Key": "order-1"}
    created = client.post("/generations", json=PROMPT, headers=key)
    assert created.status_code == 201, created.text
    generation = created.json()
    assert (generation["status"], generation["credits_quoted"], generation["queue_position"]) == (
        "QUEUED",
        price,
        1,
    )
    assert balance(client.organization) == (1000 - price, price)
    assert Generation.objects.get(pk=generation["id"]).owner_id == client.organization.account_id

    # The same key and body: the same generation, charged once; another body: IDEMPOTENCY_KEY_REUSED.
    again = client.post("/generations", json=PROMPT, headers=key)
    assert again.status_code == 201 and again.json()["id"] == generation["id"]
    assert_problem(
        client.post("/generations", json={**PROMPT, "seed": 7}, headers=key),
        422,
        "IDEMPOTENCY_KEY_REUSED",
        "Idempotency-Key",
    )
    assert balance(client.organization) == (1000 - price, price)

    assert client.get(f"/generations/{generation['id']}").json()["id"] == generation["id"]
    canceled = client.post(f"/generations/{generation['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"
    assert balance(client.organization) == (1000, 0)

    # Another organization sees none of it.
    other = api("Other Co")
    assert_problem(other.get(f"/generations/{generation['id']}"), 404, "NOT_FOUND")
    assert_problem(other.post(f"/generations/{generation['id']}/cancel"), 404, "NOT_FOUND")
    assert other.get("/generations").json()["data"] == []


def test_list_pages_with_a_cursor_newest_first(api):
    client = api(max_active_generations=50)
    ids = []
    for n in range(5):
        response = client.post("/generations", json=PROMPT, headers={"Idempotency-Key": f"page-{n}"})
        ids.append(response.json()["id"])
    seen, cursor = [], None
    while True:
        page = client.get(
            "/generations", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
        ).json()
        seen += [g["id"] for g in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


def test_a_batch_answers_each_item_and_bad_items_fail_alone(api):
    client = api(credits=100)
    price = client.post("/quotes", json=PROMPT).json()["credits"]
    items = [
        PROMPT,
        {**PROMPT, "quality": "ULTRA"},  # malformed: fails alone, naming its field
        {**PROMPT, "trend_slug": "no-such-trend"},  # a domain error
        "not an object",
        {**PROMPT, "idempotency_key": "own-key"},
    ]
    response = client.post(
        "/generations/batch", json={"items": items}, headers={"Idempotency-Key": "batch-1"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["failed"]) == (2, 3)
    results = body["data"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert results[0]["id"] and results[4]["id"] and results[0]["error"] is None
    assert (results[1]["error"]["code"], results[1]["error"]["field"]) == ("VALIDATION", "quality")
    assert (results[2]["error"]["code"], results[2]["error"]["field"]) == ("NOT_FOUND", "trend_slug")
    assert results[3]["error"]["code"] == "VALIDATION"
    assert Generation.objects.get(pk=results[4]["id"]).idempotency_key == "own-key"
    assert Generation.objects.get(pk=results[0]["id"]).idempotency_key == "batch-1:0"
    assert balance(client.organization) == (100 - 2 * price, 2 * price)

    # The same batch again: the same generations, nothing charged twice.
    again = client.post(
        "/generations/batch", json={"items": items}, headers={"Idempotency-Key": "batch-1"}
    ).json()
    assert [r["id"] for r in again["data"]] == [r["id"] for r in results]
    assert balance(client.organization) == (100 - 2 * price, 2 * price)

    # Over 100 items is a malformed batch; items without any key fail alone.
    assert_problem(
        client.post("/generations/batch", json={"items": [PROMPT] * 101}), 422, "VALIDATION", "items"
    )
    keyless = client.post("/generations/batch", json={"items": [PROMPT]}).json()
    assert (keyless["data"][0]["error"]["code"], keyless["data"][0]["error"]["field"]) == (
        "VALIDATION",
        "idempotency_key",
    )


def test_uploads_are_presigned_targets_owned_by_the_organization(api):
    client = api()
    response = client.post("/uploads", json={"count": 2, "content_type": "image/jpeg"})
    assert response.status_code == 201, response.text
    targets = response.json()["data"]
    assert len(targets) == 2 and all(t["url"].startswith("http") and t["upload_id"] for t in targets)
    assert_problem(
        client.post("/uploads", json={"count": 1, "content_type": "text/plain"}),
        422,
        "VALIDATION",
        "content_type",
    )


def test_the_openapi_document_is_served_and_committed_up_to_date(api):
    client = api()
    served = httpx.get(f"{client.base}/v1/openapi.json", timeout=30)
    assert served.status_code == 200 and served.json()["openapi"].startswith("3.1")
    assert {"/v1/generations", "/v1/generations/batch", "/v1/quotes", "/v1/uploads"} <= set(
        served.json()["paths"]
    )
    assert OPENAPI_PATH.read_text() == openapi_document(), "rest_api/openapi.json is stale: run `make schema`"
    assert json.loads(OPENAPI_PATH.read_text())["paths"] == served.json()["paths"]
