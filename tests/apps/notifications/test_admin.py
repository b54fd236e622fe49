"""Staff see what was pushed to whom and how it went; nobody edits or adds a push in admin."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse

from apps.accounts.models import User
from apps.notifications.models import PushMessage
from apps.notifications.services import push_notify_generation_finished
from apps.notifications.tasks import push_deliver_task
from tests.fixtures.factories import make_device, make_user

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:notifications_pushmessage_changelist")


@pytest.fixture
def staff_client(client):
    client.force_login(User.objects.create_superuser("admin@example.com", "a-long-test-password-42"))
    return client


@pytest.fixture
def pushes(settings) -> list[PushMessage]:
    settings.PUSH_BACKEND = "console"
    user = make_user()
    make_device(user, platform="IOS", locale="de")
    make_device(user, platform="ANDROID", locale="ja")
    pushes = push_notify_generation_finished(
        user=user, generation_id=uuid.uuid4(), succeeded=True, trend_title="X"
    )
    push_deliver_task(push_id=str(pushes[0].id))  # one SENT, one still QUEUED
    return pushes


def test_the_list_shows_kind_user_platform_status_and_attempts(staff_client, pushes):
    response = staff_client.get(CHANGELIST)
    assert response.status_code == 200
    rows = {row.pk: row for row in response.context["cl"].result_list}
    assert set(rows) == {push.pk for push in pushes}
    assert response.context["cl"].list_display == [
        "action_checkbox",
        "kind",
        "user",
        "platform",
        "locale",
        "status",
        "attempts",
        "created_at",
    ]
    html = response.content.decode()
    assert html.count("Generation succeeded") >= 2 and pushes[0].user.email in html
    assert ">Sent<" in html and ">Queued<" in html

    filtered = staff_client.get(CHANGELIST, {"status__exact": "QUEUED"})
    assert [row.pk for row in filtered.context["cl"].result_list] == [pushes[1].pk]


def test_a_push_is_read_only_and_cannot_be_added(staff_client, pushes):
    push = pushes[0]
    change = reverse("admin:notifications_pushmessage_change", args=[push.pk])
    page = staff_client.get(change)
    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    assert 'name="_save"' not in page.content.decode()
    assert staff_client.post(change, {"status": "QUEUED", "title": "edited"}).status_code == 403
    assert staff_client.get(reverse("admin:notifications_pushmessage_add")).status_code == 403
    push.refresh_from_db()
    assert (push.status, push.title) == ("SENT", "Dein Video ist fertig")
