"""Credits: grant, hold, capture, release. Every write locks the wallet row, so the balance is exact
and never negative under concurrency (the concurrency test runs on PostgreSQL)."""

from __future__ import annotations

from django.db import models, transaction
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery
from django.utils import timezone

from apps.core import events
from apps.core.errors import InsufficientCredits, ValidationFailed

from .models import CreditEntry, CreditHold, EntryKind, HoldStatus, Wallet

WALLET_EVENT_KIND = "wallet"


def owner_reference(owner: models.Model) -> str:
    """`<app_label.model>:<pk>` of a saved row. UUID primary keys are set before saving, so without the
    check an unsaved owner would give a reference to a row that may never exist."""
    if owner.pk is None or owner._state.adding:
        raise ValueError(f"credits can only be held for a saved object, not an unsaved {owner._meta.label}")
    return f"{owner._meta.label_lower}:{owner.pk}"


def _locked_wallet(user) -> Wallet:
    # One query when the wallet exists (nearly always); by id: keeps no stale wallet cached on `user`
    wallet = Wallet.objects.select_for_update().filter(user_id=user.pk).first()
    if wallet is None:
        Wallet.objects.get_or_create(user_id=user.pk)
        wallet = Wallet.objects.select_for_update().get(user_id=user.pk)
    return wallet


def _entry(
    wallet: Wallet, *, kind: str, amount: int, delta: int, reason: str, reference: str, owed_delta: int = 0
) -> CreditEntry:
    entry = CreditEntry.objects.create(
        wallet=wallet,
        kind=kind,
        amount=amount,
        delta=delta,
        owed_delta=owed_delta,
        balance_after=wallet.balance,
        reason=reason,
        reference=reference,
    )
    events.publish_change_on_commit(
        events.user_group(wallet.user_id), kind=WALLET_EVENT_KIND, id=wallet.user_id, sequence=wallet.version
    )
    return entry


def _save(wallet: Wallet) -> None:
    wallet.version += 1
    wallet.save(update_fields=["balance", "held", "owed", "version", "updated_at"])


@transaction.atomic
def credits_grant(*, user, amount: int, reason: str, reference: str = "") -> CreditEntry:
    """Adds credits. With a `reference`, granting twice gives the credits once. Credits the user owes (a
    refund of credits already spent) are paid out of the grant first."""
    if amount <= 0:
        raise ValidationFailed("A grant must be a positive number of credits.", field="amount")
    wallet = _locked_wallet(user)
    if reference:
        existing = CreditEntry.objects.filter(reference=reference, kind=EntryKind.GRANT).first()
        if existing is not None:
            return existing
    repaid = min(wallet.owed, amount)
    wallet.owed -= repaid
    wallet.balance += amount - repaid
    _save(wallet)
    return _entry(
        wallet,
        kind=EntryKind.GRANT,
        amount=amount,
        delta=amount - repaid,
        owed_delta=-repaid,
        reason=reason,
        reference=reference,
    )


@transaction.atomic
def credits_revoke(*, user, amount: int, reason: str, reference: str = "") -> CreditEntry:
    """Takes `amount` credits back (a refunded purchase, a support correction). What the balance cannot
    cover (already spent or on hold) is recorded as owed, never as a negative balance; later grants pay it.
    With a `reference`, revoking twice takes the credits once."""
    if amount <= 0:
        raise ValidationFailed("A refund must be a positive number of credits.", field="amount")
    wallet = _locked_wallet(user)
    if reference:
        existing = CreditEntry.objects.filter(reference=reference, kind=EntryKind.REVOKE).first()
        if existing is not None:
            return existing
    taken = min(wallet.balance, amount)
    wallet.balance -= taken
    wallet.owed += amount - taken
    _save(wallet)
    return _entry(
        wallet,
        kind=EntryKind.REVOKE,
        amount=amount,
        delta=-taken,
        owed_delta=amount - taken,
        reason=reason,
        reference=reference,
    )


def credits_hold(*, user, amount: int, owner: models.Model, reason: str = "") -> CreditHold:
    """Reserves `amount` for `owner`. One hold per owner: holding again for it returns the same hold.

    Atomic: in its own transaction, or in the caller's without a savepoint (a create holds inside its
    transaction; the savepoints were four of its 17 statements). Every refusal (too few
    credits, the owner held for another amount) comes before the first write, so a refused hold leaves
    the caller's transaction as it was."""
    if amount <= 0:
        raise ValidationFailed("A hold must be a positive number of credits.", field="amount")
    reference = owner_reference(owner)
    if not transaction.get_connection().in_atomic_block:
        with transaction.atomic():
            return _hold(user=user, amount=amount, reference=reference, reason=reason)
    return _hold(user=user, amount=amount, reference=reference, reason=reason)


def _hold(*, user, amount: int, reference: str, reason: str) -> CreditHold:
    # No wallet yet: nothing to hold from, and none is created for a refusal.
    wallet = Wallet.objects.select_for_update().filter(user_id=user.pk).first()
    if wallet is None or wallet.balance < amount:
        existing = CreditHold.objects.filter(owner=reference).first()
        if existing is None:
            raise InsufficientCredits(required=amount, balance=wallet.balance if wallet else 0)
        return _same_hold(existing, wallet=wallet, amount=amount)
    # The hold's unique owner is the check that this owner holds nothing yet: no query before the insert,
    # and no savepoint around it (ON CONFLICT DO NOTHING says whether it went in).
    hold = CreditHold(wallet=wallet, owner=reference, amount=amount)
    if not _insert_unless_conflicting(hold):
        existing = CreditHold.objects.filter(owner=reference).first()
        if existing is None:
            raise ValidationFailed("Credits are already held for this item.")
        return _same_hold(existing, wallet=wallet, amount=amount)
    wallet.balance -= amount
    wallet.held += amount
    _save(wallet)
    _entry(
        wallet,
        kind=EntryKind.HOLD,
        amount=amount,
        delta=-amount,
        reason=reason or "hold",
        reference=reference,
    )
    return hold


def _insert_unless_conflicting(row: models.Model) -> bool:
    """INSERTs a new row with ON CONFLICT DO NOTHING: whether it went in (False: a unique value was taken).
    Django's `bulk_create(ignore_conflicts=True)` does not say, so its compiled INSERT is run here."""
    model = type(row)
    connection = transaction.get_connection()
    query = InsertQuery(model, on_conflict=OnConflict.IGNORE)
    query.insert_values([f for f in model._meta.local_concrete_fields], [row])
    with connection.cursor() as cursor:
        for sql, params in query.get_compiler(connection=connection).as_sql():
            cursor.execute(sql, params)
        inserted = cursor.rowcount == 1
    if inserted:
        row._state.adding = False
        row._state.db = connection.alias
    return inserted


def _same_hold(existing: CreditHold, *, wallet: Wallet | None, amount: int) -> CreditHold:
    """Holding again for an owner returns its hold, when it is the same one."""
    if wallet is None or existing.wallet_id != wallet.id or existing.amount != amount:
        raise ValidationFailed("Credits are already held for this item with another amount.")
    return existing


def _settle(*, owner: models.Model, to: str) -> bool:
    reference = owner_reference(owner)
    hold = CreditHold.objects.filter(owner=reference).first()
    if hold is None:
        return False
    wallet = Wallet.objects.select_for_update().get(pk=hold.wallet_id)
    # Compare-and-set on the hold: only the first settlement changes anything.
    settled = CreditHold.objects.filter(pk=hold.pk, status=HoldStatus.HELD).update(
        status=to, settled_at=timezone.now(), updated_at=timezone.now()
    )
    if not settled:
        return False
    wallet.held -= hold.amount
    if to == HoldStatus.RELEASED:
        wallet.balance += hold.amount
    _save(wallet)
    kind = EntryKind.CAPTURE if to == HoldStatus.CAPTURED else EntryKind.RELEASE
    delta = 0 if to == HoldStatus.CAPTURED else hold.amount
    _entry(wallet, kind=kind, amount=hold.amount, delta=delta, reason=kind, reference=reference)
    return True


@transaction.atomic
def credits_capture(*, owner: models.Model) -> bool:
    """Charges the held credits. True the first time; False if already settled or never held."""
    return _settle(owner=owner, to=HoldStatus.CAPTURED)


@transaction.atomic
def credits_release(*, owner: models.Model) -> bool:
    """Gives the held credits back. True the first time; False if already settled or never held."""
    return _settle(owner=owner, to=HoldStatus.RELEASED)
