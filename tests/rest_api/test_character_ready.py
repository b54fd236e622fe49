"""An organization's Soul ID that finishes training (tiny-wan, really, on the in-process GPU lanes) sends
one `character.ready` webhook, signed per Standard Webhooks, to the endpoints that asked for it."""

from __future__ import annotations

import pytest
from standardwebhooks import Webhook

from apps.characters.models import Character, CharacterPhoto, CharacterStatus, PhotoStatus
from apps.characters.photos import character_add_photos, character_create
from apps.characters.training import character_train
from apps.credits.models import Wallet
from apps.organizations.models import DeliveryStatus, WebhookDelivery
from apps.organizations.webhooks import webhook_endpoint_create
from apps.storage.backends import get_storage
from apps.storage.services import uploads_request
from tests.fixtures.characters import make_photos
from tests.graphql.generations.helpers import wait_for
from tests.rest_api.receiver import Receiver

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def sent_photo(account, data: bytes) -> str:
    """An upload of the organization's account whose file has arrived (as after a POST to its target)."""
    issued = uploads_request(user=account, count=1, content_type="image/jpeg")[0]
    get_storage().write(issued.upload.incoming_key, data, content_type="image/jpeg")
    return str(issued.upload.pk)


def test_an_organizations_soul_id_that_finishes_training_sends_character_ready(
    make_org, django_worker, gpu_lanes, settings
):
    settings.CHARACTERS_TRAINING_ROUTE = "tiny-wan"
    gpu_lanes()
    organization, _ = make_org()
    account = organization.account
    with Receiver() as ready_receiver, Receiver() as other_receiver:
        endpoint = webhook_endpoint_create(
            organization=organization, url=ready_receiver.url, events=["character.ready"]
        )
        webhook_endpoint_create(
            organization=organization, url=other_receiver.url, events=["generation.failed"]
        )
        character = character_create(user=account, name="Brand face", consent=True)
        uploads = [sent_photo(account, data) for data in make_photos.distinct_shots()[:10]]
        character_add_photos(user=account, character_id=character.pk, upload_ids=uploads)
        wait_for(
            lambda: (
                not CharacterPhoto.objects.filter(character=character, status=PhotoStatus.PENDING).exists()
            ),
            what="the photo checks",
        )
        assert set(character.photos.values_list("status", flat=True)) == {PhotoStatus.ACCEPTED}
        assert ready_receiver.received == []  # nothing before it is ready

        character_train(user=account, character_id=character.pk)
        wait_for(ready_receiver.delivered, timeout=240, what="the character.ready webhook")

        headers, body = ready_receiver.delivered()[0]
        event = Webhook(endpoint.secret).verify(body, headers)
        assert event["type"] == "character.ready"
        assert event["data"] == {"id": str(character.pk), "object": "character", "status": "READY"}
        trained = Character.objects.get(pk=character.pk)
        assert trained.status == CharacterStatus.READY and trained.lora_metadata["family"] == "tiny-wan"
        delivery = wait_for(
            lambda: WebhookDelivery.objects.filter(
                endpoint=endpoint, status=DeliveryStatus.SUCCEEDED
            ).first(),
            what="the delivery to be recorded",
        )
        assert delivery.message_id == headers["webhook-id"] and delivery.attempts == 1
        assert len(ready_receiver.received) == 1 and other_receiver.received == []
    # The training was paid from the organization's wallet, like an app user's from theirs.
    wallet = Wallet.objects.get(user=account)
    assert (wallet.balance, wallet.held) == (1000 - settings.CHARACTERS_TRAINING_CREDITS, 0)
