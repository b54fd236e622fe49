"""Staff grant credits from Django admin; a backend worker applies the grant; the ledger stays read-only."""

from __future__ import annotations

import re
import time
import uuid

import pytest
from django.urls import reverse

from apps.accounts.models import Device, User
from apps.credits.models import CreditEntry, CreditHold, EntryKind, Wallet
from apps.credits.services import credits_grant, credits_hold

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:credits_wallet_changelist")


def _user(email: str) -> User:
    return User.objects.create_user(email, "a-long-test-password-42")


def _wait_for(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def staff_client(client):
    admin = User.objects.create_superuser("admin@example.com", "a-long-test-password-42")
    client.force_login(admin)
    return client


@pytest.fixture
def wallets() -> list[Wallet]:
    users = [_user("ann@example.com"), _user("bob@example.com"), _user("cy@example.com")]
    for user, amount in zip(users, (10, 20, 30), strict=True):
        credits_grant(user=user, amount=amount, reason="welcome", reference=f"welcome:{user.pk}")
    return [Wallet.objects.get(user=user) for user in users]


def _confirmation(staff_client, selected: list[Wallet]):
    """Step 1: the action chosen on the changelist renders the confirmation form."""
    response = staff_client.post(
        CHANGELIST,
        {"action": "grant_credits", "index": 0, "_selected_action": [str(w.pk) for w in selected]},
    )
    assert response.status_code == 200
    return response


def _confirm(staff_client, selected: list[Wallet], batch: str, amount: int, reason: str = "support"):
    """Step 2: the confirmation form posted as the browser would."""
    return staff_client.post(
        CHANGELIST,
        {
            "action": "grant_credits",
            "_selected_action": [str(w.pk) for w in selected],
            "batch": batch,
            "amount": amount,
            "reason": reason,
            "apply": "Grant",
        },
        follow=True,
    )


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_grant_action_asks_for_an_amount_then_the_worker_grants_it(staff_client, wallets, django_worker):
    ann, bob, cy = wallets
    page = _confirmation(staff_client, [ann, bob])
    html = page.content.decode()
    assert "ann@example.com" in html and "bob@example.com" in html and "cy@example.com" not in html
    batch = re.search(r'name="batch" value="([0-9a-f]{32})"', html).group(1)
    assert 'name="amount"' in html
    assert not CreditEntry.objects.filter(reason="support").exists()  # nothing granted by showing the form

    done = _confirm(staff_client, [ann, bob], batch, amount=25)
    assert done.status_code == 200
    assert "Granting credits to 2 users." in [str(m) for m in done.context["messages"]]

    _wait_for(lambda: CreditEntry.objects.filter(reason="support").count() == 2)
    assert {w.user.email: w.balance for w in Wallet.objects.select_related("user")} == {
        "ann@example.com": 35,
        "bob@example.com": 45,
        "cy@example.com": 30,
    }
    entry = CreditEntry.objects.get(wallet=ann, reason="support")
    assert (entry.kind, entry.amount, entry.delta, entry.balance_after, entry.reference) == (
        EntryKind.GRANT,
        25,
        25,
        35,
        f"admin:{batch}:{ann.user_id}",
    )

    # The same confirmation posted again (a double click, a reload) grants nothing more.
    _confirm(staff_client, [ann, bob], batch, amount=25)
    django_worker.broker.join("default", timeout=20_000)
    assert CreditEntry.objects.filter(reason="support").count() == 2
    assert Wallet.objects.get(pk=ann.pk).balance == 35


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_an_invalid_amount_shows_the_form_again_and_grants_nothing(staff_client, wallets, django_worker):
    ann = wallets[0]
    batch = uuid.uuid4().hex
    response = _confirm(staff_client, [ann], batch, amount=0)
    assert response.status_code == 200
    assert response.context["form"].errors["amount"]
    django_worker.broker.join("default", timeout=20_000)
    assert Wallet.objects.get(pk=ann.pk).balance == 10
    assert CreditEntry.objects.count() == 3


def test_ledger_entries_are_visible_in_admin_and_read_only(staff_client, wallets):
    ann = wallets[0]
    entry = CreditEntry.objects.get(wallet=ann)

    listing = staff_client.get(reverse("admin:credits_creditentry_changelist"))
    assert listing.status_code == 200
    assert f"welcome:{ann.user_id}" in listing.content.decode()

    change_url = reverse("admin:credits_creditentry_change", args=[entry.pk])
    page = staff_client.get(change_url)
    assert page.status_code == 200
    assert not page.context["has_change_permission"]
    assert 'name="_save"' not in page.content.decode()

    tampered = staff_client.post(change_url, {"amount": 9999, "delta": 9999, "balance_after": 9999})
    assert tampered.status_code == 403
    assert (
        staff_client.post(
            reverse("admin:credits_creditentry_delete", args=[entry.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert staff_client.get(reverse("admin:credits_creditentry_add")).status_code == 403
    entry.refresh_from_db()
    assert (entry.amount, entry.delta, entry.balance_after) == (10, 10, 10)

    # The wallet page shows its entries inline, read-only, and its balance cannot be typed in.
    wallet_page = staff_client.get(reverse("admin:credits_wallet_change", args=[ann.pk]))
    html = wallet_page.content.decode()
    assert wallet_page.status_code == 200
    assert f"welcome:{ann.user_id}" in html
    assert 'name="balance"' not in html and 'name="held"' not in html and 'name="version"' not in html
    assert "CreditEntry object" not in html  # each entry's heading says what it is: "Grant +10"
    assert "Grant +10" in html
    assert 'name="entries-0-amount"' not in html


def test_holds_and_wallets_cannot_be_deleted_from_admin(staff_client, wallets):
    ann = wallets[0]
    device = Device.objects.create(user=ann.user, token="phone", platform="IOS", app_version="1.0")
    hold = credits_hold(user=ann.user, amount=4, owner=device)

    hold_delete = reverse("admin:credits_credithold_delete", args=[hold.pk])
    assert staff_client.post(hold_delete, {"post": "yes"}).status_code == 403
    wallet_delete = reverse("admin:credits_wallet_delete", args=[ann.pk])
    assert staff_client.post(wallet_delete, {"post": "yes"}).status_code == 403
    bulk = staff_client.post(
        reverse("admin:credits_credithold_changelist"),
        {"action": "delete_selected", "index": 0, "_selected_action": [str(hold.pk)], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    assert CreditHold.objects.filter(pk=hold.pk).exists()
    assert Wallet.objects.filter(pk=ann.pk).exists()
    ann.refresh_from_db()
    assert (ann.balance, ann.held) == (6, 4)
