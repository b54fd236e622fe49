"""What a push may say and carry: the catalogue in every language, and the refusals of push_notify_user."""

from __future__ import annotations

import string
import uuid

import pytest

from apps.notifications import messages
from apps.notifications.models import PushKind, PushMessage
from apps.notifications.services import (
    push_notify_character_finished,
    push_notify_generation_finished,
    push_notify_user,
)
from tests.fixtures.factories import make_device, make_user

SHIPPED = {"en", "es", "pt", "pt-PT", "fr", "de", "it", "ja"}


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_language_has_every_kind_and_reason_with_the_same_placeholders():
    assert set(messages.TEXTS) == SHIPPED and set(messages.REASONS) == SHIPPED
    for locale in SHIPPED:
        assert set(messages.TEXTS[locale]) == set(PushKind.values), locale
        assert set(messages.REASONS[locale]) == set(messages.REASON_CODES), locale
        for kind in PushKind.values:
            title, body = messages.TEXTS[locale][kind]
            english_title, english_body = messages.TEXTS["en"][kind]
            assert _fields(title) == _fields(english_title) == set(), (locale, kind)
            assert _fields(body) == _fields(english_body), (locale, kind)
            assert title != english_title or locale == "en", (locale, kind)  # translated, not copied


def test_a_title_given_per_locale_is_picked_like_the_device_language():
    title = {"en": "Neon Drift", "es": "Deriva de neón", "pt-BR": "Deriva neon"}
    kind = PushKind.GENERATION_SUCCEEDED
    assert messages.render(kind, "es-AR", {"trend_title": title}).body == "«Deriva de neón» ya se puede ver."
    assert (
        messages.render(kind, "pt-BR", {"trend_title": title}).body == "“Deriva neon” já pode ser assistido."
    )
    assert (
        messages.render(kind, "de", {"trend_title": title}).body
        == "„Neon Drift“ kann jetzt angesehen werden."
    )


def test_a_long_or_multiline_title_is_shortened_to_one_line():
    rendered = messages.render(
        PushKind.GENERATION_SUCCEEDED, "en", {"trend_title": "Very\n long " + "x" * 100}
    )
    assert rendered.body == "“Very long " + "x" * 49 + "…” is ready to watch."


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda user: push_notify_user(
                user=user,
                kind=PushKind.GENERATION_SUCCEEDED,
                params={"trend_title": "X"},
                collapse_key="gen-1",
                data={"video_url": "https://cdn.example.com/out.mp4"},
            ),
            "no URLs but the app's own diffuse:// deep links",
        ),
        (
            lambda user: push_notify_user(
                user=user,
                kind=PushKind.GENERATION_SUCCEEDED,
                params={"trend_title": "X"},
                collapse_key="gen-1",
                data={"from": "1"},
            ),
            "push data key 'from' is reserved",
        ),
        (
            lambda user: push_notify_user(
                user=user,
                kind=PushKind.GENERATION_SUCCEEDED,
                params={"trend_title": "X"},
                collapse_key="gen-1",
                data={"email": "me@example.com"},
            ),
            "ids and deep links only",
        ),
        (
            lambda user: push_notify_user(
                user=user,
                kind=PushKind.GENERATION_SUCCEEDED,
                params={"trend_title": "X"},
                collapse_key="gen-1",
                data={"google_id": "1"},
            ),
            "FCM reserves",
        ),
        (
            lambda user: push_notify_user(
                user=user,
                kind=PushKind.GENERATION_SUCCEEDED,
                params={"trend_title": "X"},
                collapse_key="gen-" + "x" * 61,
                data={},
            ),
            "1 to 64 characters",
        ),
        (
            lambda user: push_notify_user(
                user=user, kind="PROMO", params={"trend_title": "X"}, collapse_key="promo", data={}
            ),
            "unknown push kind",
        ),
        (
            lambda user: push_notify_generation_finished(
                user=user, generation_id=uuid.uuid4(), succeeded=False, trend_title="X", reason="GPU_OOM"
            ),
            "unknown push reason 'GPU_OOM'",
        ),
        (
            lambda user: push_notify_generation_finished(
                user=user, generation_id=uuid.uuid4(), succeeded=True, trend_title="X", reason="QUALITY"
            ),
            "no failure reason",
        ),
        (
            lambda user: push_notify_character_finished(
                user=user, character_id=uuid.uuid4(), ready=True, character_name="  "
            ),
            "character_name: a non-empty string",
        ),
    ],
)
def test_a_push_that_does_not_fit_is_refused_and_nothing_is_recorded(call, message):
    user = make_user()
    make_device(user)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        call(user)
    assert PushMessage.objects.count() == 0


@pytest.mark.django_db
def test_a_user_without_devices_gets_no_push():
    user = make_user()
    assert (
        push_notify_generation_finished(
            user=user, generation_id=uuid.uuid4(), succeeded=True, trend_title="X"
        )
        == []
    )
    assert PushMessage.objects.count() == 0


@pytest.mark.django_db
def test_push_messages_go_with_their_user():
    user = make_user()
    make_device(user)
    push_notify_generation_finished(user=user, generation_id=uuid.uuid4(), succeeded=True, trend_title="X")
    assert PushMessage.objects.filter(user=user).count() == 1
    user.delete()
    assert PushMessage.objects.count() == 0
