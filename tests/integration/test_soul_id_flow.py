"""Issue 5's "Done when", end to end in services mode: a user consents, uploads 12 photos of which 2 are
rejected with the right reasons, replaces them, trains (tiny-wan, really, on the in-process GPU lanes),
watches progress on a real websocket, gets READY and a push, makes a generation with the Soul ID, then
deletes it, and a scan of storage finds nothing left under the Soul ID's prefix.

And issue 9's: the credits for it come from a 100-credit pack bought through verifyPurchase (the local
test store); the same purchase sent again and through a notification grants nothing more, and a refund
notification takes back what is left unspent."""

from __future__ import annotations

import httpx
import pytest
from django.core.management import call_command
from strawberry.relay import from_base64

from apps.characters.models import Character, ErasureRecord
from apps.credits.models import Wallet
from apps.notifications.models import PushMessage
from apps.storage.backends import get_storage
from tests.fixtures.characters import ADD_PHOTOS, CREATE, DELETE, REMOVE_PHOTO, make_photos
from tests.graphql.characters.test_training import TRAIN
from tests.graphql.generations.helpers import a_trend, generation_from, wait_for
from tests.graphql.generations.stack import LiveUser

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

BUY = """mutation ($receipt: String!) { verifyPurchase(input: {platform: IOS, signedTransaction: $receipt}) {
  __typename ... on PurchasePayload { wallet { balance } purchase { credits status } }
  ... on Error { code } } }"""
WATCH = """subscription ($id: ID!) { characterUpdated(id: $id) { sequence character {
  status trainingProgress trainingStep trainingTotalSteps photos { id status reasons } } } }"""


@pytest.fixture
def stack(asgi_server, django_worker, shipped_routes, settings):
    settings.STORAGE_BACKEND = "local"
    settings.CHARACTERS_TRAINING_ROUTE = "tiny-wan"
    settings.GENERATIONS_ROUTE_OVERRIDE = ""
    return asgi_server


def test_consent_photos_training_generation_and_erasure(stack, gpu_lanes):
    gpu_lanes()
    alice = LiveUser(stack)
    alice.register_device("alice-phone")
    call_command("load_products", verbosity=0)
    receipt = "local-test:com.example.diffuse.credits100:alice-order-1"
    bought = alice.gql(BUY, {"receipt": receipt})["data"]["verifyPurchase"]
    assert bought["__typename"] == "PurchasePayload", bought
    assert bought["wallet"]["balance"] == 120  # 20 welcome credits and the pack
    created = alice.gql(CREATE, {"name": "Me", "consent": True})["data"]["createCharacter"]
    assert created["__typename"] == "CharacterPayload", created
    character_id = created["character"]["id"]
    socket = alice.socket()
    socket.subscribe("c", WATCH, {"id": character_id})
    assert socket.next_for("c", timeout=20)["payload"]["data"]["characterUpdated"]["character"]["status"] == (
        "COLLECTING"
    )

    def until(condition, timeout: float = 120) -> list[dict]:
        events = []
        while True:
            message = socket.next_for("c", timeout=timeout)
            assert message["type"] == "next" and "errors" not in message["payload"], message
            events.append(message["payload"]["data"]["characterUpdated"]["character"])
            if condition(events[-1]):
                return events

    def checked(character: dict) -> bool:
        return character["status"] != "VALIDATING" and all(
            p["status"] != "PENDING" for p in character["photos"]
        )

    shots = make_photos.distinct_shots()
    bad = [make_photos.no_face_jpeg(), make_photos.blurry_jpeg()]
    uploads = [alice.upload_selfie(data) for data in [*shots[:10], *bad]]
    added = alice.gql(ADD_PHOTOS, {"id": character_id, "uploads": uploads})["data"]["addCharacterPhotos"]
    assert added["__typename"] == "CharacterPayload", added
    state = until(checked)[-1]
    verdicts = [(p["status"], p["reasons"]) for p in state["photos"]]
    assert verdicts == [("ACCEPTED", [])] * 10 + [("REJECTED", ["NO_FACE"]), ("REJECTED", ["BLURRY"])]

    for photo in state["photos"][10:]:
        removed = alice.gql(REMOVE_PHOTO, {"id": character_id, "photo": photo["id"]})["data"]
        assert removed["removeCharacterPhoto"]["__typename"] == "CharacterPayload", removed
    more = [alice.upload_selfie(data) for data in shots[10:12]]
    added = alice.gql(ADD_PHOTOS, {"id": character_id, "uploads": more})["data"]["addCharacterPhotos"]
    assert added["__typename"] == "CharacterPayload", added
    state = until(lambda c: len(c["photos"]) == 12 and checked(c))[-1]  # past the removals' events
    assert [p["status"] for p in state["photos"]] == ["ACCEPTED"] * 12 and state["status"] == "COLLECTING"

    trained = alice.gql(TRAIN, {"id": character_id})["data"]["trainCharacter"]
    assert trained["__typename"] == "CharacterPayload", trained
    events = until(lambda c: c["status"] in ("READY", "FAILED"), timeout=240)
    assert events[-1]["status"] == "READY", events[-1]
    progress = [e for e in events if e["status"] == "TRAINING" and e["trainingStep"] > 0]
    assert progress, "no training progress was seen"
    steps = [e["trainingStep"] for e in progress]
    assert steps == sorted(steps) and progress[-1]["trainingTotalSteps"] == 30
    pk = from_base64(character_id)[1]
    character = Character.objects.get(pk=pk)
    assert character.lora_metadata["family"] == "tiny-wan" and get_storage().head(character.lora_key)
    wait_for(lambda: PushMessage.objects.filter(kind="CHARACTER_READY").exists(), what="the READY push")

    trend = a_trend(requires="SOUL_ID", price_standard=4)
    generation = alice.create(trendSlug=trend.slug, characterId=character_id)
    done = wait_for(
        lambda: (
            generation_from(generation["id"]).status in ("SUCCEEDED", "FAILED")
            and generation_from(generation["id"])
        ),
        timeout=240,
        what="the generation",
    )
    assert done.status == "SUCCEEDED", (done.failure_code, done.failure_message)
    assert done.lora_key == character.lora_key

    # The purchase again, from the app and from the store: nothing more. Then the store refunds it: what
    # is left of the pack is taken back, the spent rest is owed.
    balance = Wallet.objects.get(user=alice.user).balance
    assert balance == 120 - 40 - 4  # training and one video were charged
    assert alice.gql(BUY, {"receipt": receipt})["data"]["verifyPurchase"]["wallet"]["balance"] == balance
    store = {"receipt": receipt, "platform": "IOS", "id": "store-1"}
    assert httpx.post(
        f"{stack.url}/webhooks/local-test-store", json={**store, "type": "DID_RENEW"}
    ).json() == {"outcome": "applied"}
    assert Wallet.objects.get(user=alice.user).balance == balance
    refund = {**store, "type": "REFUND", "id": "store-2"}
    assert httpx.post(f"{stack.url}/webhooks/local-test-store", json=refund).json() == {"outcome": "applied"}
    wallet = Wallet.objects.get(user=alice.user)
    assert (wallet.balance, wallet.owed) == (0, 100 - balance)

    deleted = alice.gql(DELETE, {"id": character_id})["data"]["deleteCharacter"]
    assert deleted["__typename"] == "DeletePayload", deleted
    record = wait_for(
        lambda: ErasureRecord.objects.filter(character_ref=pk, status="DONE").first(),
        timeout=60,
        what="the erasure",
    )
    assert not Character.objects.filter(pk=pk).exists()
    assert get_storage().list_keys(character.prefix) == []
    assert {a["kind"] for a in record.artifacts} >= {"lora_weights", "thumbnail", "face_crop", "prefix"}
    socket.close()
