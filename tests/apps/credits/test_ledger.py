"""The credits ledger through its services (the API other apps call): grant, hold, capture, release.

Runs on PostgreSQL under `make test` and on SQLite in the embedded suite; the races are in
`test_concurrency.py` (PostgreSQL only, since SELECT ... FOR UPDATE is a no-op on SQLite).
"""

from __future__ import annotations

import uuid

import pytest
from django.db import IntegrityError, transaction
from django.db.models import Sum

from apps.accounts.models import Device, User
from apps.accounts.services import user_welcome
from apps.core.errors import InsufficientCredits, ValidationFailed
from apps.credits.models import CreditEntry, CreditHold, EntryKind, HoldStatus, Wallet
from apps.credits.services import (
    credits_capture,
    credits_grant,
    credits_hold,
    credits_release,
    owner_reference,
)

pytestmark = pytest.mark.django_db


def _user(email: str | None = None) -> User:
    return User.objects.create_user(email or f"{uuid.uuid4().hex[:12]}@example.com", "a-long-password-42")


def _device(user: User) -> Device:
    return Device.objects.create(user=user, token=uuid.uuid4().hex, platform="IOS", app_version="1.0.0")


def _state(user: User) -> tuple[int, int]:
    wallet = Wallet.objects.get(user=user)
    return wallet.balance, wallet.held


def _ledger(user: User) -> list[dict]:
    """Every entry of the user's wallet, every column, oldest first."""
    return list(CreditEntry.objects.filter(wallet__user=user).order_by("created_at").values())


def _counts() -> tuple[int, int, int]:
    return Wallet.objects.count(), CreditEntry.objects.count(), CreditHold.objects.count()


@pytest.fixture
def user() -> User:
    return _user()


@pytest.fixture
def funded(user) -> User:
    credits_grant(user=user, amount=100, reason="test", reference=f"test:{user.pk}")
    return user


# --- Grants ------------------------------------------------------------------------------------


def test_grant_creates_the_wallet_and_adds_credits(user):
    entry = credits_grant(user=user, amount=30, reason="promo")
    assert _state(user) == (30, 0)
    assert (entry.kind, entry.amount, entry.delta, entry.balance_after) == (EntryKind.GRANT, 30, 30, 30)
    credits_grant(user=user, amount=12, reason="promo")
    assert _state(user) == (42, 0)
    assert CreditEntry.objects.filter(wallet__user=user, kind=EntryKind.GRANT).count() == 2


def test_grant_with_a_reference_is_idempotent(user):
    first = credits_grant(user=user, amount=25, reason="promo", reference="promo:spring")
    again = credits_grant(user=user, amount=25, reason="promo", reference="promo:spring")
    assert again.pk == first.pk
    assert _state(user) == (25, 0)
    assert CreditEntry.objects.filter(reference="promo:spring").count() == 1
    # A different reference is a different grant.
    credits_grant(user=user, amount=5, reason="promo", reference="promo:summer")
    assert _state(user) == (30, 0)


@pytest.mark.parametrize("amount", [0, -5])
def test_grant_of_a_non_positive_amount_is_refused_and_writes_nothing(user, amount):
    with pytest.raises(ValidationFailed) as info:
        credits_grant(user=user, amount=amount, reason="oops")
    assert info.value.field == "amount"
    assert _counts() == (0, 0, 0)


def test_welcome_grant_is_configurable_and_given_once(settings):
    settings.WELCOME_CREDITS = 7
    user = _user()
    user_welcome(user=user)
    user_welcome(user=user)  # e.g. a retried sign-up step
    assert _state(user) == (7, 0)
    assert list(CreditEntry.objects.values_list("kind", "reason", "reference", "amount")) == [
        ("grant", "welcome", f"welcome:{user.pk}", 7)
    ]

    settings.WELCOME_CREDITS = 0
    nothing = _user()
    user_welcome(user=nothing)
    assert not Wallet.objects.filter(user=nothing).exists()
    assert CreditEntry.objects.count() == 1


# --- Holds -------------------------------------------------------------------------------------


def test_hold_takes_credits_out_of_the_balance_and_into_held(funded):
    owner = _device(funded)
    hold = credits_hold(user=funded, amount=30, owner=owner, reason="generation")
    assert _state(funded) == (70, 30)
    assert (hold.owner, hold.amount, hold.status) == (owner_reference(owner), 30, HoldStatus.HELD)
    entry = CreditEntry.objects.get(kind=EntryKind.HOLD)
    assert (entry.amount, entry.delta, entry.balance_after, entry.reference) == (
        30,
        -30,
        70,
        f"accounts.device:{owner.pk}",
    )


def test_hold_can_spend_the_balance_down_to_exactly_zero(funded):
    credits_hold(user=funded, amount=100, owner=_device(funded))
    assert _state(funded) == (0, 100)


def test_insufficient_credits_carries_required_and_balance_and_writes_nothing(funded):
    credits_hold(user=funded, amount=60, owner=_device(funded))
    before_counts, before_ledger = _counts(), _ledger(funded)
    owner = _device(funded)

    with pytest.raises(InsufficientCredits) as info:
        credits_hold(user=funded, amount=41, owner=owner)

    assert (info.value.required, info.value.balance) == (41, 40)
    assert info.value.code.value == "INSUFFICIENT_CREDITS"
    assert _state(funded) == (40, 60)
    assert _counts() == before_counts
    assert _ledger(funded) == before_ledger
    assert not CreditHold.objects.filter(owner=owner_reference(owner)).exists()


def test_insufficient_credits_without_a_wallet_creates_no_wallet(user):
    with pytest.raises(InsufficientCredits) as info:
        credits_hold(user=user, amount=1, owner=_device(user))
    assert (info.value.required, info.value.balance) == (1, 0)
    assert _counts() == (0, 0, 0)


def test_holding_twice_for_the_same_owner_returns_the_same_hold(funded):
    owner = _device(funded)
    first = credits_hold(user=funded, amount=30, owner=owner)
    again = credits_hold(user=funded, amount=30, owner=owner)
    assert again.pk == first.pk
    assert _state(funded) == (70, 30)
    assert CreditHold.objects.count() == 1
    assert CreditEntry.objects.filter(kind=EntryKind.HOLD).count() == 1


def test_holding_again_for_the_same_owner_with_another_amount_is_refused(funded):
    owner = _device(funded)
    credits_hold(user=funded, amount=30, owner=owner)
    with pytest.raises(ValidationFailed):
        credits_hold(user=funded, amount=31, owner=owner)
    assert _state(funded) == (70, 30)
    assert CreditHold.objects.count() == 1


def test_an_owner_held_by_another_users_wallet_cannot_be_held_again(funded):
    owner = _device(funded)
    credits_hold(user=funded, amount=10, owner=owner)
    other = _user()
    credits_grant(user=other, amount=50, reason="test")
    with pytest.raises(ValidationFailed):
        credits_hold(user=other, amount=10, owner=owner)
    assert _state(other) == (50, 0)
    assert _state(funded) == (90, 10)


def test_owners_can_be_any_saved_model_and_do_not_collide(funded):
    device, second_user = _device(funded), _user()
    credits_hold(user=funded, amount=10, owner=device)
    credits_hold(user=funded, amount=20, owner=second_user)
    assert set(CreditHold.objects.values_list("owner", "amount")) == {
        (f"accounts.device:{device.pk}", 10),
        (f"accounts.user:{second_user.pk}", 20),
    }
    assert _state(funded) == (70, 30)
    assert credits_capture(owner=device) is True
    assert _state(funded) == (70, 20)
    assert CreditHold.objects.get(owner=owner_reference(second_user)).status == HoldStatus.HELD


def test_an_unsaved_owner_is_a_programming_error_and_holds_nothing(funded):
    unsaved = Device(user=funded, token="never-saved", platform="IOS", app_version="1.0.0")
    with pytest.raises(ValueError):
        credits_hold(user=funded, amount=10, owner=unsaved)
    assert _state(funded) == (100, 0)
    assert CreditHold.objects.count() == 0


@pytest.mark.parametrize("amount", [0, -1])
def test_hold_of_a_non_positive_amount_is_refused(funded, amount):
    with pytest.raises(ValidationFailed) as info:
        credits_hold(user=funded, amount=amount, owner=_device(funded))
    assert info.value.field == "amount"
    assert _state(funded) == (100, 0)
    assert CreditHold.objects.count() == 0


# --- Capture and release -----------------------------------------------------------------------


def test_capture_settles_once_and_release_after_capture_refunds_nothing(funded):
    owner = _device(funded)
    credits_hold(user=funded, amount=30, owner=owner)

    assert credits_capture(owner=owner) is True
    assert _state(funded) == (70, 0)
    assert credits_capture(owner=owner) is False
    assert credits_release(owner=owner) is False
    assert _state(funded) == (70, 0)

    hold = CreditHold.objects.get(owner=owner_reference(owner))
    assert hold.status == HoldStatus.CAPTURED
    assert hold.settled_at is not None
    assert list(
        CreditEntry.objects.filter(reference=hold.owner).order_by("created_at").values_list("kind")
    ) == [
        ("hold",),
        ("capture",),
    ]
    capture = CreditEntry.objects.get(kind=EntryKind.CAPTURE)
    assert (capture.amount, capture.delta, capture.balance_after) == (30, 0, 70)


def test_release_gives_the_credits_back_once_and_capture_after_release_is_a_no_op(funded):
    owner = _device(funded)
    credits_hold(user=funded, amount=30, owner=owner)

    assert credits_release(owner=owner) is True
    assert _state(funded) == (100, 0)
    assert credits_release(owner=owner) is False
    assert credits_capture(owner=owner) is False
    assert _state(funded) == (100, 0)

    assert CreditHold.objects.get(owner=owner_reference(owner)).status == HoldStatus.RELEASED
    release = CreditEntry.objects.get(kind=EntryKind.RELEASE)
    assert (release.amount, release.delta, release.balance_after) == (30, 30, 100)
    assert not CreditEntry.objects.filter(kind=EntryKind.CAPTURE).exists()


def test_a_settled_owner_is_not_held_again(funded):
    owner = _device(funded)
    credits_hold(user=funded, amount=30, owner=owner)
    credits_release(owner=owner)
    again = credits_hold(user=funded, amount=30, owner=owner)
    assert again.status == HoldStatus.RELEASED  # the one hold of this owner, already settled
    assert _state(funded) == (100, 0)
    assert CreditHold.objects.count() == 1


def test_capture_or_release_without_a_hold_changes_nothing(funded):
    owner = _device(funded)
    assert credits_capture(owner=owner) is False
    assert credits_release(owner=owner) is False
    assert _state(funded) == (100, 0)
    assert CreditEntry.objects.count() == 1  # the grant


# --- The ledger itself -------------------------------------------------------------------------


def test_entries_reproduce_the_balance_and_are_never_updated(funded):
    owners = [_device(funded) for _ in range(4)]
    snapshots: list[list[dict]] = [_ledger(funded)]

    def step(action) -> None:
        action()
        ledger = _ledger(funded)
        previous = snapshots[-1]
        # Append-only: every earlier row is still there, column for column.
        assert ledger[: len(previous)] == previous
        assert len(ledger) == len(previous) + 1
        snapshots.append(ledger)

    step(lambda: credits_hold(user=funded, amount=10, owner=owners[0]))
    step(lambda: credits_hold(user=funded, amount=20, owner=owners[1]))
    step(lambda: credits_hold(user=funded, amount=30, owner=owners[2]))
    step(lambda: credits_capture(owner=owners[0]))
    step(lambda: credits_release(owner=owners[1]))
    step(lambda: credits_grant(user=funded, amount=5, reason="promo"))
    step(lambda: credits_hold(user=funded, amount=45, owner=owners[3]))
    # Refused or repeated calls add nothing.
    with pytest.raises(InsufficientCredits):
        credits_hold(user=funded, amount=21, owner=_device(funded))
    credits_capture(owner=owners[0])
    credits_release(owner=owners[0])
    assert _ledger(funded) == snapshots[-1]

    balance, held = _state(funded)
    assert (balance, held) == (100 - 10 - 30 - 45 + 5, 30 + 45)
    ledger = _ledger(funded)
    assert sum(entry["delta"] for entry in ledger) == balance
    running = 0
    for entry in ledger:
        running += entry["delta"]
        assert entry["balance_after"] == running
    held_amounts = CreditEntry.objects.filter(wallet__user=funded, kind=EntryKind.HOLD).aggregate(
        s=Sum("amount")
    )
    settled = CreditEntry.objects.filter(
        wallet__user=funded, kind__in=[EntryKind.CAPTURE, EntryKind.RELEASE]
    ).aggregate(s=Sum("amount"))
    assert held_amounts["s"] - settled["s"] == held
    assert CreditHold.objects.filter(status=HoldStatus.HELD).aggregate(s=Sum("amount"))["s"] == held


@pytest.mark.parametrize(
    "change",
    [{"balance": -1}, {"held": -1}],
    ids=["negative balance", "negative held"],
)
def test_database_refuses_a_negative_wallet_even_from_a_raw_update(funded, change):
    with pytest.raises(IntegrityError), transaction.atomic():
        Wallet.objects.filter(user=funded).update(**change)
    assert _state(funded) == (100, 0)


def test_database_refuses_a_second_entry_of_a_kind_for_the_same_reference(funded):
    wallet = Wallet.objects.get(user=funded)
    with pytest.raises(IntegrityError), transaction.atomic():
        CreditEntry.objects.create(
            wallet=wallet,
            kind=EntryKind.GRANT,
            amount=100,
            delta=100,
            balance_after=200,
            reference=f"test:{funded.pk}",
        )
    assert CreditEntry.objects.count() == 1
