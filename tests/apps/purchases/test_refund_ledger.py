"""Taking credits back (a refund): what is unspent comes off the balance, the rest is owed and comes out
of the next grants; the balance never goes below zero; the same refund twice takes back once."""

from __future__ import annotations

import uuid

import pytest
from django.db.models import Sum

from apps.accounts.models import User
from apps.credits.models import CreditEntry, EntryKind, Wallet
from apps.credits.services import credits_capture, credits_grant, credits_hold, credits_revoke

pytestmark = pytest.mark.django_db


def _user() -> User:
    return User.objects.create_user(f"{uuid.uuid4().hex[:12]}@example.com", "a-long-password-42")


def _wallet(user) -> Wallet:
    return Wallet.objects.get(user=user)


def test_a_refund_of_unspent_credits_takes_them_all_back():
    user = _user()
    credits_grant(user=user, amount=100, reason="purchase", reference="p1")
    entry = credits_revoke(user=user, amount=100, reason="refund", reference="r1")
    assert (entry.kind, entry.delta, entry.owed_delta) == (EntryKind.REVOKE, -100, 0)
    assert (_wallet(user).balance, _wallet(user).owed) == (0, 0)


def test_spent_credits_are_owed_and_the_next_grant_pays_them_first():
    user = _user()
    credits_grant(user=user, amount=100, reason="purchase", reference="p1")
    generation_owner = User.objects.create_user(f"{uuid.uuid4().hex[:8]}@x.com")  # any saved row owns a hold
    credits_hold(user=user, amount=40, owner=generation_owner)
    credits_capture(owner=generation_owner)  # 40 spent, 60 left
    entry = credits_revoke(user=user, amount=100, reason="refund", reference="r1")
    assert (entry.delta, entry.owed_delta) == (-60, 40)
    wallet = _wallet(user)
    assert (wallet.balance, wallet.owed) == (0, 40)

    grant = credits_grant(user=user, amount=30, reason="renewal", reference="p2")
    assert (grant.delta, grant.owed_delta) == (0, -30)
    assert (_wallet(user).balance, _wallet(user).owed) == (0, 10)
    credits_grant(user=user, amount=100, reason="pack", reference="p3")
    assert (_wallet(user).balance, _wallet(user).owed) == (90, 0)
    # The ledger adds up: deltas give the balance, owed deltas what is owed.
    totals = CreditEntry.objects.filter(wallet__user=user).aggregate(b=Sum("delta"), o=Sum("owed_delta"))
    assert (totals["b"], totals["o"]) == (90, 0)


def test_held_credits_are_not_taken_back_and_count_as_owed():
    user = _user()
    credits_grant(user=user, amount=50, reason="purchase", reference="p1")
    owner = User.objects.create_user(f"{uuid.uuid4().hex[:8]}@x.com")
    credits_hold(user=user, amount=20, owner=owner)
    credits_revoke(user=user, amount=50, reason="refund", reference="r1")
    wallet = _wallet(user)
    assert (wallet.balance, wallet.held, wallet.owed) == (0, 20, 20)


def test_the_same_refund_twice_takes_back_once():
    user = _user()
    credits_grant(user=user, amount=100, reason="purchase", reference="p1")
    first = credits_revoke(user=user, amount=100, reason="refund", reference="r1")
    again = credits_revoke(user=user, amount=100, reason="refund", reference="r1")
    assert first.pk == again.pk
    assert (_wallet(user).balance, _wallet(user).owed) == (0, 0)
