"""Fair sharing: an organization's batch puts at most its window of jobs in the lanes; the rest wait,
charged but unsent, and go one by one as its jobs end. An app user's job is never queued behind the
whole batch."""

from __future__ import annotations

import pytest

from apps.credits.services import credits_grant
from apps.generations.models import Generation, GenerationStatus
from apps.generations.selectors import generation_estimate
from apps.generations.services import GenerationRequest, generation_cancel, generation_create
from tests.fixtures.factories import make_user
from tests.graphql.generations.helpers import wait_for
from tests.rest_api.test_rest_api import PROMPT, balance

pytestmark = pytest.mark.django_db(transaction=True)


def sent(ids) -> set[str]:
    """Those of `ids` in the lanes: sent and not finished."""
    return {
        str(pk)
        for pk in Generation.objects.filter(pk__in=ids, share_held=False, status=GenerationStatus.QUEUED)
        .exclude(job_message_id="")
        .values_list("pk", flat=True)
    }


def test_a_batch_takes_only_its_window_of_the_lane_and_app_users_go_ahead_of_the_rest(api):
    client = api(max_active_generations=2)
    items = [{**PROMPT, "seed": n} for n in range(6)]
    body = client.post(
        "/generations/batch", json={"items": items}, headers={"Idempotency-Key": "fair"}
    ).json()
    ids = [result["id"] for result in body["data"]]
    assert body["accepted"] == 6  # all accepted and charged...
    price = Generation.objects.get(pk=ids[0]).quoted_credits
    assert balance(client.organization) == (1000 - 6 * price, 6 * price)
    wait_for(lambda: sent(ids) == set(ids[:2]), what="the window of 2 to be sent", timeout=20)
    held = Generation.objects.filter(pk__in=ids, share_held=True)
    assert sorted(str(pk) for pk in held.values_list("pk", flat=True)) == sorted(ids[2:])  # ...4 wait

    # An app user's job goes to the lane at once, behind the window only, not the whole batch.
    user = make_user()
    credits_grant(user=user, amount=50, reason="test")
    mine = generation_create(user=user, request=GenerationRequest(**PROMPT, idempotency_key="mine"))
    assert mine.share_held is False
    assert generation_estimate(mine).position == 3
    wait_for(lambda: sent([mine.pk]) == {str(mine.pk)}, what="the app user's job to be sent", timeout=20)

    # One of the organization's jobs ends: its oldest held one takes the place, and only that one.
    generation_cancel(user=client.organization.account, generation_id=ids[0])
    wait_for(lambda: sent(ids) == {ids[1], ids[2]}, what="the next held job to be sent", timeout=20)
    # It goes to the tail of the lane, behind the app user's job queued meanwhile (owners take turns).
    assert generation_estimate(Generation.objects.get(pk=ids[2])).position == 3
    assert Generation.objects.filter(pk__in=ids, share_held=True).count() == 3
    # A held job canceled is never sent, and releases nothing more than the window allows.
    generation_cancel(user=client.organization.account, generation_id=ids[5])
    assert Generation.objects.get(pk=ids[5]).status == GenerationStatus.CANCELED
    assert sent(ids) == {ids[1], ids[2]}
