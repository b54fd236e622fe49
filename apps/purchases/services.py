"""Purchases: verify with the store, then grant exactly once; follow renewals, refunds and revocations.

Two doors lead here and either may come first: the app (`purchase_verify`, `purchases_restore`) and the
stores' server notifications (`notification_receive`). Both end in `transaction_apply`, which records the
charge under a row lock on its unique (platform, transaction_id) and moves credits only through
apps.credits with a unique ledger reference, so the same charge seen by eight requests and a
notification at once grants once (tests/apps/purchases/test_exactly_once.py runs it on PostgreSQL).

Network calls to the stores happen before any transaction is opened: a slow store never holds a lock.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import Platform
from apps.accounts.throttle import bump_and_check
from apps.core.actors import actor_send
from apps.core.errors import (
    DomainError,
    InvalidReceipt,
    ProductUnknown,
    ReceiptBelongsToAnotherUser,
    StoreUnavailable,
    ValidationFailed,
)
from apps.credits.services import credits_grant, credits_revoke

from .models import (
    NotificationOutcome,
    Product,
    ProductKind,
    Purchase,
    PurchaseSource,
    PurchaseStatus,
    StoreNotification,
    Subscription,
)
from .stores import Environment, ProductType, StoreNotice, StoreTransaction, SubscriptionState, local

logger = logging.getLogger(__name__)

ACKNOWLEDGE_ACTOR = "purchase_acknowledge"
MAX_RECEIPT_CHARS = 64 * 1024


class UnknownUser(DomainError):
    """A notification for a purchase that names no user of ours (never seen, or the account is gone)."""

    default_message = "The purchase belongs to no known account."


# --- The app's door -----------------------------------------------------------------------------


def _throttle(user) -> None:
    bump_and_check(
        scope="purchases",
        key=str(user.pk),
        limit=settings.PURCHASES_MAX_CALLS_PER_WINDOW,
        window=settings.PURCHASES_CALLS_WINDOW_SECONDS,
        message="Too many purchase checks. Try again in a few minutes; your purchases are safe.",
    )


def _product_for(platform: str, store_product_id: str) -> Product:
    """The catalogue entry of a store product id, on sale or not: a purchase of a product that left the
    shop is still honoured."""
    field = "apple_product_id" if platform == Platform.IOS else "google_product_id"
    product = Product.objects.filter(**{field: store_product_id}).first() if store_product_id else None
    if product is None:
        raise ProductUnknown(field="productId")
    return product


def _product_type(product: Product) -> ProductType:
    return ProductType.SUBSCRIPTION if product.kind == ProductKind.SUBSCRIPTION else ProductType.CONSUMABLE


def _verify_with_store(
    *, platform: str, signed_transaction: str | None, purchase_token: str | None, product_id: str | None
) -> StoreTransaction:
    """Asks the platform's store (or the local test store) what this receipt is. No database writes."""
    if platform == Platform.IOS:
        if not signed_transaction:
            raise ValidationFailed(
                "App Store purchases send `signedTransaction` (StoreKit's jwsRepresentation).",
                field="signedTransaction",
            )
        receipt = signed_transaction
    elif platform == Platform.ANDROID:
        if not purchase_token or not product_id:
            raise ValidationFailed(
                "Google Play purchases send `purchaseToken` and `productId`.",
                field="purchaseToken" if not purchase_token else "productId",
            )
        receipt = purchase_token
    else:
        raise ValidationFailed("Platform is IOS or ANDROID.", field="platform")
    if len(receipt) > MAX_RECEIPT_CHARS:
        raise InvalidReceipt("This receipt is too long to be a store's.")

    if local.is_local_receipt(receipt):
        product = _product_for(platform, local.store_product_id(receipt))
        return local.verify(receipt, platform=platform, product_type=_product_type(product))
    if platform == Platform.IOS:
        from .stores import apple

        if not apple.is_configured():
            raise InvalidReceipt("App Store purchases are not accepted by this server yet.")
        return apple.verify_transaction(signed_transaction)
    from .stores import google

    product = _product_for(platform, product_id)
    if not google.is_configured():
        raise InvalidReceipt("Google Play purchases are not accepted by this server yet.")
    return google.verify_purchase(purchase_token, product_id, _product_type(product))


@dataclass(frozen=True)
class PurchaseOutcome:
    purchase: Purchase | None  # None for restorePurchases


def purchase_verify(
    *,
    user,
    platform: str,
    signed_transaction: str | None = None,
    purchase_token: str | None = None,
    product_id: str | None = None,
) -> PurchaseOutcome:
    """verifyPurchase: the store confirms the charge, then its credits are granted (once)."""
    _throttle(user)
    txn = _verify_with_store(
        platform=platform,
        signed_transaction=signed_transaction,
        purchase_token=purchase_token,
        product_id=product_id,
    )
    if platform == Platform.ANDROID and txn.store_product_id != product_id:
        raise InvalidReceipt("This purchase token is for another product than `productId`.")
    return PurchaseOutcome(purchase=transaction_apply(txn, source=PurchaseSource.APP, caller=user))


def purchases_restore(*, user, platform: str) -> PurchaseOutcome:
    """restorePurchases: re-reads from the store every purchase of the user we know on this platform
    (App Store transaction history, Play subscription state), applies what changed, and retries
    acknowledgements that are still due."""
    if platform not in Platform.values:
        raise ValidationFailed("Platform is IOS or ANDROID.", field="platform")
    _throttle(user)
    originals = (
        Purchase.objects.filter(user=user, platform=platform)
        .exclude(environment=Environment.LOCAL)
        .values_list("original_id", "environment", "product__kind", "product__google_product_id")
        .distinct()
    )
    apple_histories_read: set[str] = set()
    for original_id, environment, kind, google_product_id in originals:
        if platform == Platform.IOS:
            # Apple's history of any one transaction is the customer's whole history: one read per
            # environment, not one per purchase.
            if environment in apple_histories_read:
                continue
            apple_histories_read.add(environment)
        for txn in _reread(platform, original_id, Environment(environment), kind, google_product_id):
            try:
                transaction_apply(txn, source=PurchaseSource.RESTORE, caller=user)
            except (ProductUnknown, ReceiptBelongsToAnotherUser, InvalidReceipt) as exc:
                logger.warning("restore skipped %s %s: %s", platform, txn.transaction_id, exc.message)
    for purchase in Purchase.objects.filter(user=user, platform=platform, acknowledged_at__isnull=True):
        _schedule_acknowledge(purchase)
    return PurchaseOutcome(purchase=None)


def _reread(platform, original_id, environment, kind, google_product_id) -> list[StoreTransaction]:
    if platform == Platform.IOS:
        from .stores import apple

        if not apple.is_configured():
            return []
        return apple.transaction_history(original_id, environment) or []
    from .stores import google

    if kind != ProductKind.SUBSCRIPTION or not google.is_configured():
        return []  # a one-time Play purchase never changes after its grant except by a voided notification
    try:
        return [google.verify_purchase(original_id, google_product_id, ProductType.SUBSCRIPTION)]
    except InvalidReceipt:
        return []


# --- Applying what a store said ------------------------------------------------------------------


def _owner_of(txn: StoreTransaction, *, caller) -> object:
    """The user a transaction belongs to. The store's account binding and an earlier record both beat
    the caller's word: a receipt bound to, or already used by, another account is refused."""
    User = get_user_model()
    bound = None
    if txn.account_token:
        try:
            bound_id = uuid.UUID(str(txn.account_token))
        except ValueError:
            bound_id = None
        bound = User.objects.filter(pk=bound_id).first() if bound_id else None
        if caller is not None and (bound_id is None or bound_id != caller.pk):
            raise ReceiptBelongsToAnotherUser()
    earlier = (
        Purchase.objects.filter(platform=txn.platform, original_id=txn.original_id)
        .values_list("user_id", flat=True)
        .first()
    )
    if earlier is None and txn.linked_purchase_token:
        earlier = (
            Subscription.objects.filter(platform=txn.platform, original_id=txn.linked_purchase_token)
            .values_list("user_id", flat=True)
            .first()
        )
    if caller is not None:
        if earlier is not None and earlier != caller.pk:
            raise ReceiptBelongsToAnotherUser()
        return caller
    if bound is not None:
        return bound
    if earlier is not None:
        return User.objects.get(pk=earlier)
    raise UnknownUser()


def _environment_allowed(txn: StoreTransaction) -> bool:
    if txn.environment == Environment.PRODUCTION:
        return True
    if txn.environment == Environment.LOCAL:
        return local.is_enabled()
    if txn.platform == Platform.IOS:
        return settings.APPLE_ALLOW_SANDBOX
    return settings.GOOGLE_PLAY_ALLOW_TEST_PURCHASES


def transaction_apply(txn: StoreTransaction, *, source: str, caller=None) -> Purchase | None:
    """Records one verified charge and moves its credits exactly once:
    - first seen and not revoked: grant `product.credits x quantity`;
    - revoked (refund, revocation) after its grant: take the credits back (what was spent is owed);
    - a plan's transaction also brings the plan's state, unless a newer one was applied already.
    Returns the Purchase, or None when the charge is ignored (a sandbox purchase where sandbox is off is
    refused to the app with InvalidReceipt and ignored for notifications)."""
    product = _product_for(txn.platform, txn.store_product_id)
    if _product_type(product) != txn.product_type:
        raise InvalidReceipt("The store sold this product as another kind than the app's catalogue says.")
    if not _environment_allowed(txn):
        if caller is not None:
            raise InvalidReceipt(f"{txn.environment.capitalize()} purchases are not accepted by this server.")
        return None
    user = _owner_of(txn, caller=caller)
    with transaction.atomic():
        purchase, created = _locked_purchase(txn, user=user, product=product, source=source)
        if purchase.user_id != user.pk:  # lost a race to another account's claim of the same charge
            raise ReceiptBelongsToAnotherUser()
        if created and purchase.status == PurchaseStatus.GRANTED:
            credits_grant(
                user=user,
                amount=purchase.credits,
                reason=f"purchase: {product.name}"[:200],
                reference=purchase.grant_reference,
            )
        elif txn.revoked_at is not None and purchase.status == PurchaseStatus.GRANTED:
            _take_back(
                purchase, revoked_at=txn.revoked_at, reason=txn.revocation_reason or "refunded by the store"
            )
        if txn.acknowledged and purchase.acknowledged_at is None:
            purchase.acknowledged_at = timezone.now()
            purchase.save(update_fields=["acknowledged_at", "updated_at"])
        if product.kind == ProductKind.SUBSCRIPTION:
            _subscription_apply(txn, user=user, product=product)
    if purchase.acknowledged_at is None:
        _schedule_acknowledge(purchase)
    return purchase


def _locked_purchase(txn: StoreTransaction, *, user, product: Product, source: str) -> tuple[Purchase, bool]:
    """The Purchase row of this charge, created if new, locked for this transaction. Concurrent creators
    of the same charge wait on the unique index; all but one then find the row and lock it."""
    revoked = txn.revoked_at is not None
    try:
        with transaction.atomic():
            purchase = Purchase.objects.create(
                user=user,
                product=product,
                platform=txn.platform,
                environment=txn.environment,
                transaction_id=txn.transaction_id,
                original_id=txn.original_id,
                purchase_token=txn.purchase_token,
                quantity=txn.quantity,
                credits=product.credits * max(txn.quantity, 1),
                # Refunded before we ever saw it: recorded, never granted.
                status=PurchaseStatus.REFUNDED if revoked else PurchaseStatus.GRANTED,
                source=source,
                purchased_at=txn.purchased_at,
                expires_at=txn.expires_at,
                revoked_at=txn.revoked_at,
                revocation_reason=txn.revocation_reason[:200],
                raw=txn.raw,
            )
        return purchase, True
    except IntegrityError:
        purchase = Purchase.objects.select_for_update().get(
            platform=txn.platform, transaction_id=txn.transaction_id
        )
        return purchase, False


def _take_back(purchase: Purchase, *, revoked_at, reason: str) -> None:
    entry = credits_revoke(
        user=purchase.user,
        amount=purchase.credits,
        reason=f"refund: {reason}"[:200],
        reference=f"refund:{purchase.platform}:{purchase.transaction_id}",
    )
    purchase.status = PurchaseStatus.REFUNDED
    purchase.revoked_at = revoked_at
    purchase.revocation_reason = reason[:200]
    purchase.credits_taken_back = -entry.delta
    purchase.credits_owed = entry.owed_delta
    purchase.save(
        update_fields=[
            "status",
            "revoked_at",
            "revocation_reason",
            "credits_taken_back",
            "credits_owed",
            "updated_at",
        ]
    )


def _subscription_apply(txn: StoreTransaction, *, user, product: Product) -> None:
    state = txn.state or SubscriptionState.ACTIVE
    defaults = {
        "user": user,
        "product": product,
        "environment": txn.environment,
        "state": state,
        "expires_at": txn.expires_at,
        "will_renew": bool(txn.will_renew)
        if txn.will_renew is not None
        else state == SubscriptionState.ACTIVE,
        "grace_until": txn.grace_until,
        "last_event_at": txn.revoked_at or txn.purchased_at,
    }
    try:
        with transaction.atomic():
            Subscription.objects.create(platform=txn.platform, original_id=txn.original_id, **defaults)
    except IntegrityError:
        subscription = Subscription.objects.select_for_update().get(
            platform=txn.platform, original_id=txn.original_id
        )
        if defaults["last_event_at"] < subscription.last_event_at:
            return  # an older charge arriving late (out-of-order notifications): the newer state stands
        for name, value in defaults.items():
            setattr(subscription, name, value)
        subscription.save()
    if txn.linked_purchase_token:  # Play: an upgrade, downgrade or resubscribe replaces the old token's plan
        Subscription.objects.filter(platform=txn.platform, original_id=txn.linked_purchase_token).update(
            state=SubscriptionState.EXPIRED,
            will_renew=False,
            replaced_by=txn.original_id,
            updated_at=timezone.now(),
        )


def _schedule_acknowledge(purchase: Purchase) -> None:
    if purchase.platform != Platform.ANDROID or purchase.environment == Environment.LOCAL:
        return
    purchase_id = str(purchase.pk)
    transaction.on_commit(lambda: actor_send(ACKNOWLEDGE_ACTOR, purchase_id=purchase_id))


def purchase_acknowledge(*, purchase_id: str) -> None:
    """Google Play refunds a purchase not acknowledged within three days: consume a pack (which also
    acknowledges it and lets the user buy it again), acknowledge a plan. Retried by its actor."""
    purchase = Purchase.objects.select_related("product").filter(pk=purchase_id).first()
    if purchase is None or purchase.acknowledged_at is not None:
        return
    from .stores import google

    google.acknowledge(
        StoreTransaction(
            platform=purchase.platform,
            environment=Environment(purchase.environment),
            transaction_id=purchase.transaction_id,
            original_id=purchase.original_id,
            store_product_id=purchase.product.google_product_id,
            product_type=_product_type(purchase.product),
            purchased_at=purchase.purchased_at,
            purchase_token=purchase.purchase_token,
            acknowledged=False,
        )
    )
    Purchase.objects.filter(pk=purchase.pk, acknowledged_at__isnull=True).update(
        acknowledged_at=timezone.now(), updated_at=timezone.now()
    )


# --- The stores' door ----------------------------------------------------------------------------


def notification_receive(notice: StoreNotice) -> NotificationOutcome:
    """Applies one verified server notification, once. A replay of a handled one changes nothing; one that
    failed before (the store redelivers it) is tried again. Raises StoreUnavailable when the store must
    redeliver (the view answers 503)."""
    record, created = _claim_notification(notice)
    if not created and record.outcome != NotificationOutcome.FAILED:
        StoreNotification.objects.filter(pk=record.pk).update(attempts=record.attempts + 1)
        return NotificationOutcome.DUPLICATE
    outcome, detail, user = NotificationOutcome.APPLIED, "", None
    try:
        for txn in notice.transactions:
            try:
                purchase = transaction_apply(txn, source=PurchaseSource.NOTIFICATION)
            except (UnknownUser, ProductUnknown, InvalidReceipt) as exc:
                outcome, detail = NotificationOutcome.IGNORED, exc.message
                continue
            if purchase is None:
                outcome, detail = NotificationOutcome.IGNORED, f"{txn.environment} purchases are off"
            else:
                user = purchase.user
        for transaction_id in notice.voided_transaction_ids:
            user = _void(notice.platform, transaction_id) or user
        if not notice.transactions and not notice.voided_transaction_ids:
            outcome, detail = NotificationOutcome.IGNORED, "nothing to apply"
    except StoreUnavailable as exc:
        _finish_notification(record, NotificationOutcome.FAILED, exc.message, None, retried=not created)
        raise
    _finish_notification(record, outcome, detail, user, retried=not created)
    return outcome


def _void(platform: str, transaction_id: str):
    with transaction.atomic():
        purchase = (
            Purchase.objects.select_for_update()
            .filter(platform=platform, transaction_id=transaction_id)
            .select_related("user")
            .first()
        )
        if purchase is None:
            return None
        if purchase.status == PurchaseStatus.GRANTED:
            _take_back(purchase, revoked_at=timezone.now(), reason="voided by Google Play")
        if purchase.product.kind == ProductKind.SUBSCRIPTION:
            Subscription.objects.filter(platform=platform, original_id=purchase.original_id).update(
                state=SubscriptionState.REVOKED, will_renew=False, updated_at=timezone.now()
            )
        return purchase.user


def _claim_notification(notice: StoreNotice) -> tuple[StoreNotification, bool]:
    try:
        with transaction.atomic():
            return (
                StoreNotification.objects.create(
                    platform=notice.platform,
                    notification_id=notice.notification_id[:200],
                    type=notice.type[:64],
                    subtype=notice.subtype[:64],
                    environment=notice.environment,
                    outcome=NotificationOutcome.FAILED,  # until applied
                    raw=notice.raw,
                ),
                True,
            )
    except IntegrityError:
        return (
            StoreNotification.objects.get(
                platform=notice.platform, notification_id=notice.notification_id[:200]
            ),
            False,
        )


def _finish_notification(record, outcome, detail, user, *, retried: bool) -> None:
    record.outcome = outcome
    record.detail = detail[:300]
    record.user = user
    fields = ["outcome", "detail", "user", "updated_at"]
    if retried:
        record.attempts += 1
        fields.append("attempts")
    record.save(update_fields=fields)


def local_product_type(platform: str, store_product_id: str) -> ProductType:
    """For the local test store's notifications: the kind of a catalogue product."""
    try:
        return _product_type(_product_for(platform, store_product_id))
    except ProductUnknown:
        return ProductType.CONSUMABLE


# --- Staff ---------------------------------------------------------------------------------------


def purchase_refund_by_staff(*, purchase: Purchase, reason: str) -> Purchase:
    """A refund staff grant outside the stores (support): takes the purchase's credits back, audited by
    the admin's log with the reason."""
    if not reason.strip():
        raise ValidationFailed("Say why the purchase is refunded.", field="reason")
    with transaction.atomic():
        locked = Purchase.objects.select_for_update().select_related("user").get(pk=purchase.pk)
        if locked.status == PurchaseStatus.GRANTED:
            _take_back(locked, revoked_at=timezone.now(), reason=f"staff: {reason.strip()}")
    return locked
