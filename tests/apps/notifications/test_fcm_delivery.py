"""Push delivery through FCM with the real firebase-admin: the JSON it posts, and what each FCM answer does.

Tests marked `services` run the actor on Redis with the `django_worker` threads, enqueued at commit as in
production; the others call the actor function directly, where one attempt at a time is clearer.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import dramatiq
import pytest
from django.db import transaction
from django.utils import timezone

from apps.accounts.models import Device
from apps.accounts.services import device_register
from apps.core.queues import QUEUE_PUSH
from apps.notifications.models import PushMessage, PushStatus
from apps.notifications.services import push_notify_character_finished, push_notify_generation_finished
from apps.notifications.tasks import push_deliver_task
from tests.fakes.google import FCM_SEND_URL, OAUTH_TOKEN_URL, FakeFcm
from tests.fixtures.factories import make_device, make_user
from tests.fixtures.push import PROJECT, wait_for

NBSP = "\u00a0"


def _expected_generation_message(
    *, token: str, push: PushMessage, generation_id, title: str, body: str
) -> dict:
    return {
        "message": {
            "token": token,
            "notification": {"title": title, "body": body},
            "data": {
                "generation_id": str(generation_id),
                "deep_link": f"diffuse://generations/{generation_id}",
                "kind": push.kind,
                "push_id": str(push.id),
            },
            "android": {
                "priority": "high",
                "collapse_key": f"gen-{generation_id}",
                "notification": {"channel_id": "generations", "tag": f"gen-{generation_id}"},
            },
            "apns": {
                "headers": {"apns-collapse-id": f"gen-{generation_id}", "apns-priority": "10"},
                "payload": {"aps": {"mutable-content": 1, "sound": "default", "thread-id": "generations"}},
            },
        }
    }


def _deliver(push: PushMessage) -> None:
    """One attempt, as the worker makes it (raises dramatiq.Retry when another is due)."""
    push_deliver_task(push_id=str(push.id))


# --- Through the worker on Redis ---------------------------------------------------------------------


@pytest.mark.services
def test_two_devices_get_the_push_each_in_its_own_language(fcm, google, django_worker):
    user = make_user()
    phone = make_device(user, platform="IOS", locale="es-MX")
    tablet = make_device(user, platform="ANDROID", locale="ja-JP")
    generation_id = uuid.uuid4()

    with transaction.atomic():
        pushes = push_notify_generation_finished(
            user=user, generation_id=generation_id, succeeded=True, trend_title="Neon Drift"
        )
        assert len(pushes) == 2
    wait_for(
        lambda: PushMessage.objects.filter(user=user, status=PushStatus.SENT).count() == 2, what="2 SENT"
    )

    es, ja = PushMessage.objects.get(device=phone), PushMessage.objects.get(device=tablet)
    requests = {request.message["token"]: request for request in fcm.requests}
    assert len(fcm.requests) == 2 and set(requests) == {phone.token, tablet.token}
    assert requests[phone.token].body == _expected_generation_message(
        token=phone.token,
        push=es,
        generation_id=generation_id,
        title="Tu vídeo está listo",
        body="«Neon Drift» ya se puede ver.",
    )
    assert requests[tablet.token].body == _expected_generation_message(
        token=tablet.token,
        push=ja,
        generation_id=generation_id,
        title="動画が完成しました",
        body="「Neon Drift」を今すぐ再生できます。",
    )
    assert (es.status, es.attempts, es.locale, es.platform, es.error) == ("SENT", 1, "es", "IOS", "")
    assert (ja.status, ja.attempts, ja.locale, ja.platform, ja.error) == ("SENT", 1, "ja", "ANDROID", "")
    # Each row holds the FCM message name its own request was answered with.
    numbers = {request.message["token"]: index + 1 for index, request in enumerate(fcm.requests)}
    assert es.provider_message_id == fcm.message_name(numbers[phone.token])
    assert ja.provider_message_id == fcm.message_name(numbers[tablet.token])
    # Authorised with an access token google-auth obtained for the service account (a signed JWT grant);
    # nothing else went to the network.
    assert google.access_tokens
    assert {r.authorization for r in fcm.requests} <= {f"Bearer {t}" for t in google.access_tokens}
    assert {url for _, url in google.calls} == {OAUTH_TOKEN_URL, FCM_SEND_URL.format(project_id=PROJECT)}


@pytest.mark.services
def test_quota_exceeded_then_success_is_one_retry_and_one_sent_message(fcm, django_worker, settings):
    settings.PUSH_RETRY_MIN_BACKOFF_MS = 50
    user = make_user()
    device = make_device(user, platform="ANDROID")
    fcm.answer(device.token, FakeFcm.quota_exceeded(retry_after="1"))

    with transaction.atomic():
        (push,) = push_notify_generation_finished(
            user=user, generation_id=uuid.uuid4(), succeeded=True, trend_title="Neon Drift"
        )
    wait_for(lambda: PushMessage.objects.get(pk=push.pk).status == PushStatus.SENT, what="SENT")

    first, second = fcm.requests_to(device.token)
    assert first.body == second.body  # the same message, sent again
    assert second.at - first.at >= 1.0  # not before FCM's Retry-After
    push.refresh_from_db()
    assert (push.status, push.attempts, push.error) == ("SENT", 2, "")
    assert push.provider_message_id == fcm.message_name(2)
    assert PushMessage.objects.filter(user=user).count() == 1
    assert Device.objects.filter(pk=device.pk).exists()


@pytest.mark.services
def test_unavailable_until_the_cap_gives_up_with_failed(fcm, django_worker, settings):
    settings.PUSH_RETRY_MIN_BACKOFF_MS = 50
    settings.PUSH_MAX_ATTEMPTS = 3
    user = make_user()
    device = make_device(user)
    fcm.answer(device.token, *[FakeFcm.unavailable() for _ in range(5)])

    with transaction.atomic():
        (push,) = push_notify_generation_finished(
            user=user, generation_id=uuid.uuid4(), succeeded=False, trend_title="Neon Drift", reason="QUALITY"
        )
    wait_for(lambda: PushMessage.objects.get(pk=push.pk).status == PushStatus.FAILED, what="FAILED")
    dramatiq.get_broker().join(QUEUE_PUSH, timeout=10_000)  # nothing left to retry

    assert len(fcm.requests_to(device.token)) == 3
    push.refresh_from_db()
    assert (push.status, push.attempts) == ("FAILED", 3)
    assert push.error.startswith("gave up after 3 attempts; last: UnavailableError (UNAVAILABLE, HTTP 503)")
    assert Device.objects.filter(pk=device.pk).exists()


@pytest.mark.services
def test_the_same_message_delivered_twice_sends_once(fcm, django_worker, settings):
    settings.PUSH_SENDING_LEASE_SECONDS = 3
    user = make_user()
    device = make_device(user)
    with transaction.atomic():
        (push,) = push_notify_character_finished(
            user=user, character_id=uuid.uuid4(), ready=True, character_name="Me"
        )
    broker = dramatiq.get_broker()
    broker.join(QUEUE_PUSH, timeout=20_000)
    assert len(fcm.requests_to(device.token)) == 1

    # A redelivery of the same message, twice, on the two worker threads at once.
    message = push_deliver_task.message(push_id=str(push.id))
    broker.enqueue(message)
    broker.enqueue(message)
    broker.join(QUEUE_PUSH, timeout=20_000)

    assert len(fcm.requests_to(device.token)) == 1
    push.refresh_from_db()
    assert (push.status, push.attempts) == ("SENT", 1)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_push_in_a_rolled_back_transaction_is_neither_kept_nor_enqueued(settings):
    broker = dramatiq.get_broker()
    broker.flush_all()
    user = make_user()
    make_device(user)

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        push_notify_generation_finished(
            user=user, generation_id=uuid.uuid4(), succeeded=True, trend_title="X"
        )
        raise Rollback
    assert PushMessage.objects.count() == 0
    assert broker.client.llen(f"{broker.namespace}:{QUEUE_PUSH}") == 0

    with transaction.atomic():
        (push,) = push_notify_generation_finished(
            user=user, generation_id=uuid.uuid4(), succeeded=True, trend_title="X"
        )
        assert broker.client.llen(f"{broker.namespace}:{QUEUE_PUSH}") == 0  # not before the commit
    (message_id,) = broker.client.lrange(f"{broker.namespace}:{QUEUE_PUSH}", 0, -1)
    message = dramatiq.Message.decode(broker.client.hget(f"{broker.namespace}:{QUEUE_PUSH}.msgs", message_id))
    assert (message.actor_name, message.kwargs) == ("push_deliver", {"push_id": str(push.id)})
    broker.flush_all()


# --- One attempt at a time -------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("locale", "catalogue", "title"),
    [
        ("xx-YY", "en", "Your video is ready"),  # unknown language: English
        ("!!", "en", "Your video is ready"),
        ("en-GB", "en", "Your video is ready"),
        ("de-AT", "de", "Dein Video ist fertig"),  # a region we have no text for: its language
        ("pt_BR", "pt", "Seu vídeo está pronto"),  # POSIX spelling; pt is Brazilian, as on the phones
        ("pt-PT", "pt-PT", "O seu vídeo está pronto"),
        ("fr-CA", "fr", "Votre vidéo est prête"),
    ],
)
def test_the_locale_falls_back_to_the_language_then_english(fcm, locale, catalogue, title):
    user = make_user()
    make_device(user, locale=locale)
    (push,) = push_notify_generation_finished(
        user=user, generation_id=uuid.uuid4(), succeeded=True, trend_title="Neon Drift"
    )
    _deliver(push)

    (request,) = fcm.requests
    assert request.message["notification"]["title"] == title
    push.refresh_from_db()
    assert (push.status, push.locale, push.title) == ("SENT", catalogue, title)


@pytest.mark.django_db
def test_a_failed_generation_says_why_and_that_nothing_was_charged(fcm):
    user = make_user()
    device = make_device(user, platform="ANDROID", locale="fr-FR")
    generation_id = uuid.uuid4()
    (push,) = push_notify_generation_finished(
        user=user, generation_id=generation_id, succeeded=False, trend_title="Neon Drift", reason="QUALITY"
    )
    _deliver(push)

    (request,) = fcm.requests
    assert request.body == _expected_generation_message(
        token=device.token,
        push=push,
        generation_id=generation_id,
        title="Impossible de créer votre vidéo",
        body=f"«{NBSP}Neon Drift{NBSP}»{NBSP}: Le résultat n’a pas atteint notre niveau de qualité. "
        "Aucun crédit n’a été débité.",
    )
    assert request.message["data"]["kind"] == "GENERATION_FAILED"


@pytest.mark.django_db
def test_a_ready_soul_id_push_links_to_the_character(fcm):
    user = make_user()
    device = make_device(user, platform="IOS", locale="de-DE")
    character_id = uuid.uuid4()
    (push,) = push_notify_character_finished(
        user=user, character_id=character_id, ready=True, character_name="Ich"
    )
    _deliver(push)

    (request,) = fcm.requests
    assert request.body == {
        "message": {
            "token": device.token,
            "notification": {
                "title": "Deine Soul ID ist bereit",
                "body": "„Ich“ ist trainiert und kann in jedem Trend verwendet werden.",
            },
            "data": {
                "character_id": str(character_id),
                "deep_link": f"diffuse://characters/{character_id}",
                "kind": "CHARACTER_READY",
                "push_id": str(push.id),
            },
            "android": {
                "priority": "high",
                "collapse_key": f"char-{character_id}",
                "notification": {"channel_id": "soul_id", "tag": f"char-{character_id}"},
            },
            "apns": {
                "headers": {"apns-collapse-id": f"char-{character_id}", "apns-priority": "10"},
                "payload": {"aps": {"mutable-content": 1, "sound": "default", "thread-id": "soul-id"}},
            },
        }
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("answer", "error_class"),
    [(FakeFcm.unregistered, "UnregisteredError"), (FakeFcm.sender_id_mismatch, "SenderIdMismatchError")],
)
def test_a_dead_token_deletes_its_device_and_spares_the_others(fcm, answer, error_class):
    user = make_user()
    dead = make_device(user, platform="ANDROID", locale="en")
    alive = make_device(user, platform="IOS", locale="en")
    fcm.answer(dead.token, answer())
    pushes = push_notify_generation_finished(
        user=user, generation_id=uuid.uuid4(), succeeded=True, trend_title="X"
    )
    by_device = {push.device_id: push.pk for push in pushes}
    for push in pushes:
        _deliver(push)  # neither is retried

    assert not Device.objects.filter(pk=dead.pk).exists()
    assert Device.objects.filter(pk=alive.pk).exists()
    dead_push = PushMessage.objects.get(pk=by_device[dead.pk])
    assert (dead_push.status, dead_push.attempts, dead_push.device_id) == ("DEAD", 1, None)
    assert dead_push.error.startswith(error_class)
    assert PushMessage.objects.get(pk=by_device[alive.pk]).status == PushStatus.SENT

    # The next push goes to the live device only.
    later = push_notify_character_finished(
        user=user, character_id=uuid.uuid4(), ready=True, character_name="Me"
    )
    assert [push.device_id for push in later] == [alive.pk]


@pytest.mark.django_db
def test_a_retryable_answer_schedules_the_next_attempt_no_sooner_than_retry_after(fcm, settings):
    settings.PUSH_RETRY_MIN_BACKOFF_MS = 200
    user = make_user()
    device = make_device(user)
    fcm.answer(device.token, FakeFcm.quota_exceeded(retry_after="30"), FakeFcm.internal())
    (push,) = push_notify_generation_finished(
        user=user, generation_id=uuid.uuid4(), succeeded=True, trend_title="X"
    )

    with pytest.raises(dramatiq.Retry) as first:
        _deliver(push)
    assert first.value.delay == 30_000  # Retry-After is longer than the backoff, so it wins
    push.refresh_from_db()
    assert (push.status, push.attempts) == ("QUEUED", 1)
    assert push.error.startswith("QuotaExceededError (RESOURCE_EXHAUSTED, HTTP 429)")
    assert push.next_attempt_at - push.claimed_at >= timedelta(seconds=30)

    with pytest.raises(dramatiq.Retry) as second:  # a 500 without Retry-After: exponential backoff
        _deliver(push)
    assert 200 <= second.value.delay <= 400  # attempt 2: min backoff x 2, with equal jitter
    push.refresh_from_db()
    assert (push.status, push.attempts) == ("QUEUED", 2)
    assert push.error.startswith("InternalError (INTERNAL, HTTP 500)")

    _deliver(push)
    push.refresh_from_db()
    assert (push.status, push.attempts, push.error) == ("SENT", 3, "")
    assert len(fcm.requests_to(device.token)) == 3


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("answer", "error_class", "requests"),
    [
        # A 401 makes google-auth refresh its access token and resend, twice (its AuthorizedSession), before
        # firebase-admin sees the error: three requests, all answered THIRD_PARTY_AUTH_ERROR by FCM.
        (FakeFcm.third_party_auth_error, "ThirdPartyAuthError", 3),
        (FakeFcm.invalid_argument, "InvalidArgumentError", 1),
    ],
)
def test_an_auth_or_argument_error_fails_at_once_loudly_and_keeps_the_token(
    fcm, google, caplog, answer, error_class, requests
):
    user = make_user()
    device = make_device(user, platform="IOS")
    fcm.answer(device.token, *[answer() for _ in range(requests)])
    (push,) = push_notify_generation_finished(
        user=user, generation_id=uuid.uuid4(), succeeded=True, trend_title="X"
    )

    with caplog.at_level(logging.ERROR, logger="apps.notifications"):
        _deliver(push)  # no Retry raised
        _deliver(push)  # and a redelivery sends nothing

    push.refresh_from_db()
    assert (push.status, push.attempts) == ("FAILED", 1)
    assert push.error.startswith(error_class)
    assert Device.objects.filter(pk=device.pk, token=device.token).exists()
    assert len(fcm.requests) == requests
    assert len(google.access_tokens) == requests  # a fresh token for each resend after a 401
    errors = [
        r for r in caplog.records if r.levelno == logging.ERROR and r.name == "apps.notifications.senders"
    ]
    assert len(errors) == 1 and str(push.id) in errors[0].getMessage()
    assert device.token not in errors[0].getMessage()


@pytest.mark.django_db
def test_redelivery_of_a_sent_message_sends_nothing(fcm):
    user = make_user()
    make_device(user)
    (push,) = push_notify_generation_finished(
        user=user, generation_id=uuid.uuid4(), succeeded=True, trend_title="X"
    )
    _deliver(push)
    push.refresh_from_db()
    sent = (push.status, push.attempts, push.provider_message_id, push.sent_at, push.updated_at)
    assert sent[:3] == ("SENT", 1, fcm.message_name(1))

    _deliver(push)
    _deliver(push)

    push.refresh_from_db()
    assert (push.status, push.attempts, push.provider_message_id, push.sent_at, push.updated_at) == sent
    assert len(fcm.requests) == 1


@pytest.mark.django_db
def test_a_claim_in_progress_is_left_alone_and_an_expired_one_is_taken_over(fcm, settings):
    settings.PUSH_SENDING_LEASE_SECONDS = 60
    user = make_user()
    make_device(user)
    (push,) = push_notify_generation_finished(
        user=user, generation_id=uuid.uuid4(), succeeded=True, trend_title="X"
    )
    claimed = timezone.now() - timedelta(seconds=20)
    PushMessage.objects.filter(pk=push.pk).update(status=PushStatus.SENDING, attempts=1, claimed_at=claimed)

    with pytest.raises(dramatiq.Retry) as caught:  # another worker holds it: look again when its lease ends
        _deliver(push)
    assert 39_000 <= caught.value.delay <= 40_001
    assert fcm.requests == []

    # That worker died: once its lease has run out, the message is sent by the next delivery.
    PushMessage.objects.filter(pk=push.pk).update(claimed_at=claimed - timedelta(seconds=60))
    _deliver(push)
    push.refresh_from_db()
    assert (push.status, push.attempts) == ("SENT", 2)
    assert len(fcm.requests) == 1


@pytest.mark.django_db
def test_a_device_that_moved_to_another_account_gets_nothing(fcm):
    owner, other = make_user(), make_user()
    device = make_device(owner)
    (push,) = push_notify_generation_finished(
        user=owner, generation_id=uuid.uuid4(), succeeded=True, trend_title="X"
    )
    # The phone signs in to another account before the push goes out.
    device_register(user=other, token=device.token, platform="IOS", app_version="1.4.0", locale="en")

    _deliver(push)

    push.refresh_from_db()
    assert (push.status, push.attempts) == ("DEAD", 0)
    assert fcm.requests == []
    assert Device.objects.get(pk=device.pk).user == other  # not deleted: the token is fine
