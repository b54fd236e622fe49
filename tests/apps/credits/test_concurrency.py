"""Races on PostgreSQL: the wallet row lock keeps the balance exact and every hold settled once.

SELECT ... FOR UPDATE is a no-op on SQLite, so these run only against PostgreSQL (`services`).
Each thread opens its own connection, waits on a barrier so the calls really overlap, and closes
its connection at the end.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.db.models import Sum

from apps.accounts.models import Device, User
from apps.core.errors import InsufficientCredits
from apps.credits.models import CreditEntry, CreditHold, EntryKind, HoldStatus, Wallet
from apps.credits.services import credits_capture, credits_grant, credits_hold, credits_release

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def _race(calls: list[Callable[[], Any]]) -> list[tuple[str, Any]]:
    """Runs each call in its own thread, all released at once; returns ("ok", result) or ("error", exc)."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[tuple[str, Any] | None] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            connection.ensure_connection()  # connect before the barrier: the race is the calls themselves
            barrier.wait(timeout=30)
            outcomes[index] = ("ok", call())
        except Exception as exc:
            outcomes[index] = ("error", exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a racing call hung"
    assert all(outcome is not None for outcome in outcomes)
    return outcomes  # type: ignore[return-value]


def _user() -> User:
    return User.objects.create_user(f"{uuid.uuid4().hex[:12]}@example.com", "a-long-password-42")


def _devices(user: User, count: int) -> list[Device]:
    return [
        Device.objects.create(user=user, token=uuid.uuid4().hex, platform="ANDROID", app_version="2.0")
        for _ in range(count)
    ]


def _assert_ledger_matches(user: User) -> None:
    wallet = Wallet.objects.get(user=user)
    entries = CreditEntry.objects.filter(wallet=wallet)
    assert entries.aggregate(s=Sum("delta"))["s"] == wallet.balance
    open_holds = CreditHold.objects.filter(wallet=wallet, status=HoldStatus.HELD).aggregate(s=Sum("amount"))
    assert (open_holds["s"] or 0) == wallet.held


def test_concurrent_holds_with_credit_for_k_of_them_give_exactly_k_holds():
    n, k, amount = 12, 5, 7
    user = _user()
    credits_grant(user=user, amount=k * amount, reason="test")
    owners = _devices(user, n)

    outcomes = _race(
        [lambda owner=owner: credits_hold(user=user, amount=amount, owner=owner) for owner in owners]
    )

    holds = [value for status, value in outcomes if status == "ok"]
    errors = [value for status, value in outcomes if status == "error"]
    assert len(holds) == k
    assert len(errors) == n - k
    assert all(isinstance(error, InsufficientCredits) for error in errors), errors
    assert all(error.required == amount and error.balance < amount for error in errors)
    wallet = Wallet.objects.get(user=user)
    assert (wallet.balance, wallet.held) == (0, k * amount)
    assert CreditHold.objects.filter(wallet=wallet, status=HoldStatus.HELD).count() == k
    assert CreditEntry.objects.filter(wallet=wallet, kind=EntryKind.HOLD).count() == k
    assert {hold.pk for hold in holds} == set(CreditHold.objects.values_list("pk", flat=True))
    _assert_ledger_matches(user)


def test_concurrent_holds_for_the_same_owner_hold_once():
    user = _user()
    credits_grant(user=user, amount=100, reason="test")
    (owner,) = _devices(user, 1)

    outcomes = _race([lambda: credits_hold(user=user, amount=30, owner=owner) for _ in range(8)])

    assert [status for status, _ in outcomes] == ["ok"] * 8
    assert len({hold.pk for _, hold in outcomes}) == 1
    wallet = Wallet.objects.get(user=user)
    assert (wallet.balance, wallet.held) == (70, 30)
    assert CreditEntry.objects.filter(kind=EntryKind.HOLD).count() == 1
    _assert_ledger_matches(user)


def test_racing_capture_and_release_on_the_same_hold_settle_it_exactly_once():
    user = _user()
    credits_grant(user=user, amount=50, reason="test")
    (owner,) = _devices(user, 1)
    credits_hold(user=user, amount=20, owner=owner)

    calls = [lambda: ("capture", credits_capture(owner=owner)) for _ in range(6)]
    calls += [lambda: ("release", credits_release(owner=owner)) for _ in range(6)]
    outcomes = _race(calls)

    assert all(status == "ok" for status, _ in outcomes), outcomes
    winners = [verb for _, (verb, settled) in outcomes if settled]
    assert len(winners) == 1
    hold = CreditHold.objects.get()
    wallet = Wallet.objects.get(user=user)
    if winners == ["capture"]:
        assert hold.status == HoldStatus.CAPTURED
        assert (wallet.balance, wallet.held) == (30, 0)
    else:
        assert hold.status == HoldStatus.RELEASED
        assert (wallet.balance, wallet.held) == (50, 0)
    settlements = CreditEntry.objects.filter(kind__in=[EntryKind.CAPTURE, EntryKind.RELEASE])
    assert list(settlements.values_list("kind", flat=True)) == [winners[0]]
    _assert_ledger_matches(user)


def test_concurrent_grants_with_one_reference_grant_once():
    user = _user()
    outcomes = _race(
        [
            lambda: credits_grant(user=user, amount=15, reason="promo", reference="promo:once")
            for _ in range(8)
        ]
    )
    assert all(status == "ok" for status, _ in outcomes), outcomes
    assert len({entry.pk for _, entry in outcomes}) == 1
    assert Wallet.objects.get(user=user).balance == 15
    _assert_ledger_matches(user)
