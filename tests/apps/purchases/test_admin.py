"""Purchases in admin: the catalogue, every purchase and notification with its decoded payload, and a
staff refund that asks for a reason and is recorded (ledger entry and admin history)."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.core.management import call_command

from apps.accounts.models import User
from apps.credits.models import CreditEntry, EntryKind, Wallet
from apps.purchases.models import Product, ProductKind, Purchase, PurchaseSource, PurchaseStatus
from apps.purchases.services import notification_receive, transaction_apply
from apps.purchases.stores import ProductType, local

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    admin = User.objects.create_superuser("staff@example.com", "a-long-password-42")
    client.force_login(admin)
    return client


@pytest.fixture
def purchase() -> Purchase:
    call_command("load_products", verbosity=0)
    user = User.objects.create_user("buyer@example.com", "a-long-password-42")
    txn = local.verify(
        "local-test:com.example.diffuse.credits100:a1", platform="IOS", product_type=ProductType.CONSUMABLE
    )
    return transaction_apply(txn, source=PurchaseSource.APP, caller=user)


def test_the_catalogue_lists_and_validates_products(staff):
    call_command("load_products", verbosity=0)
    page = staff.get("/admin/purchases/product/")
    assert page.status_code == 200 and b"Pro plan" in page.content
    response = staff.post(
        "/admin/purchases/product/add/",
        {
            "name": "Broken plan",
            "kind": ProductKind.SUBSCRIPTION,
            "credits": 100,
            "level": 0,
            "apple_product_id": "com.example.broken",
            "google_product_id": "",
            "display_order": 1,
            "is_active": "on",
        },
    )
    assert response.status_code == 200 and b"A plan needs a level of 1 or more" in response.content
    assert not Product.objects.filter(name="Broken plan").exists()


def test_a_purchase_shows_the_stores_payload(staff, purchase):
    page = staff.get(f"/admin/purchases/purchase/{purchase.pk}/change/")
    assert page.status_code == 200
    assert b"local-test" in page.content and b"Store payload" in page.content


def test_a_staff_refund_needs_a_reason_and_is_recorded(staff, purchase):
    url = "/admin/purchases/purchase/"
    form = staff.post(url, {"action": "refund", "_selected_action": [purchase.pk]})
    assert form.status_code == 200 and b"Refund 1 purchase" in form.content
    staff.post(url, {"action": "refund", "_selected_action": [purchase.pk], "apply": "1", "reason": ""})
    assert Purchase.objects.get().status == PurchaseStatus.GRANTED  # no reason: nothing happened

    staff.post(
        url, {"action": "refund", "_selected_action": [purchase.pk], "apply": "1", "reason": "chargeback"}
    )
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.REFUNDED and purchase.credits_taken_back == 100
    assert Wallet.objects.get(user=purchase.user).balance == 0
    entry = CreditEntry.objects.get(kind=EntryKind.REVOKE)
    assert "chargeback" in entry.reason
    log = LogEntry.objects.get(object_id=str(purchase.pk))
    assert "chargeback" in log.change_message and log.user.email == "staff@example.com"


def test_notifications_are_listed_with_their_payload(staff, purchase):
    notice = local.parse_notification(
        b'{"type": "REFUND", "receipt": "local-test:com.example.diffuse.credits100:a1", "id": "n1"}',
        product_type_of=lambda platform, product: ProductType.CONSUMABLE,
    )
    notification_receive(notice)
    page = staff.get("/admin/purchases/storenotification/")
    assert page.status_code == 200 and b"REFUND" in page.content
    assert staff.get("/admin/purchases/subscription/").status_code == 200


def test_a_users_history_and_a_plans_charges_are_one_click_away(staff, purchase):
    listing = staff.get("/admin/purchases/purchase/")
    link = f"?user__id__exact={purchase.user_id}"
    assert link.encode() in listing.content
    history = staff.get(f"/admin/purchases/purchase/{link}")
    assert history.status_code == 200 and b"buyer@example.com" in history.content
    charges = staff.get(f"/admin/purchases/purchase/?original_id={purchase.original_id}")
    assert charges.status_code == 200 and b"1 purchase" in charges.content


def test_staff_can_take_credits_back_with_a_reason_and_it_is_audited(staff, purchase):
    wallet = Wallet.objects.get(user=purchase.user)
    url = "/admin/credits/wallet/"
    form = staff.post(url, {"action": "take_back_credits", "_selected_action": [wallet.pk]})
    assert form.status_code == 200 and b"Take back credits from 1 user" in form.content
    staff.post(
        url,
        {
            "action": "take_back_credits",
            "_selected_action": [wallet.pk],
            "apply": "1",
            "amount": 130,
            "reason": "duplicate support grant",
            "batch": "b1",
        },
    )
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.owed) == (0, 130 - 100)  # the pack was all it had
    assert LogEntry.objects.filter(
        object_id=str(wallet.pk), change_message__contains="duplicate support"
    ).exists()
