"""Account writes: sign-up, sign-in, token refresh with rotation, Firebase sign-in, devices."""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.core.errors import (
    EmailTaken,
    InvalidCredentials,
    NotFound,
    TokenInvalid,
    TokenReused,
    ValidationFailed,
)
from apps.credits.services import credits_grant

from . import firebase, throttle
from .models import Device, Platform, RefreshToken, User
from .tokens import access_token_issue, refresh_token_hash, refresh_token_new

logger = logging.getLogger(__name__)

# A fixed hash to compare against when the email is unknown, so timing does not reveal accounts.
_DUMMY_USER = User(email="nobody@example.invalid")
_DUMMY_USER.set_password(uuid.uuid4().hex)


@dataclass(frozen=True)
class AuthTokens:
    user: User
    access_token: str
    access_token_expires_at: datetime
    refresh_token: str


def _normalize_email(email: str) -> str:
    email = (email or "").strip().lower()
    try:
        validate_email(email)
    except DjangoValidationError:
        raise ValidationFailed("Enter a valid email address.", field="email") from None
    return email


def _issue_tokens(*, user: User, family: uuid.UUID | None = None) -> AuthTokens:
    access, expires_at = access_token_issue(user_id=user.id)
    refresh = refresh_token_new()
    RefreshToken.objects.create(
        user=user,
        family=family or uuid.uuid4(),
        token_hash=refresh.token_hash,
        expires_at=timezone.now() + settings.REFRESH_TOKEN_TTL,
    )
    return AuthTokens(
        user=user, access_token=access, access_token_expires_at=expires_at, refresh_token=refresh.token
    )


@transaction.atomic
def user_sign_up(*, email: str, password: str, ip: str = "") -> AuthTokens:
    email = _normalize_email(email)
    candidate = User(email=email)
    try:
        password_validation.validate_password(password, user=candidate)
    except DjangoValidationError as exc:
        raise ValidationFailed(" ".join(exc.messages), field="password") from None
    if User.objects.filter(email=email).exists():
        raise EmailTaken(field="email")
    throttle.signup_check(ip=ip)
    try:
        with transaction.atomic():
            user = User.objects.create_user(email=email, password=password)
    except IntegrityError:  # a concurrent sign-up with the same email won
        raise EmailTaken(field="email") from None
    user_welcome(user=user)
    return _issue_tokens(user=user)


def user_welcome(*, user: User) -> None:
    """What every new account gets, however it was created: the welcome grant of credits."""
    if settings.WELCOME_CREDITS > 0:
        credits_grant(
            user=user, amount=settings.WELCOME_CREDITS, reason="welcome", reference=f"welcome:{user.id}"
        )


def user_sign_in(*, email: str, password: str, ip: str = "") -> AuthTokens:
    email = (email or "").strip().lower()
    throttle.login_check(email=email, ip=ip)
    user = User.objects.filter(email=email).first()
    if user is None:
        _DUMMY_USER.check_password(password)
        throttle.login_failed(email=email)
        raise InvalidCredentials()
    if not user.check_password(password) or not user.is_active:
        throttle.login_failed(email=email)
        raise InvalidCredentials()
    throttle.login_succeeded(email=email)
    with transaction.atomic():
        return _issue_tokens(user=user)


def token_refresh(*, refresh_token: str) -> AuthTokens:
    """Rotates a refresh token. A used or revoked token revokes its whole family (reuse detection)."""
    now = timezone.now()
    with transaction.atomic():
        row = (
            RefreshToken.objects.select_for_update()
            .select_related("user")
            .filter(token_hash=refresh_token_hash(refresh_token or ""))
            .first()
        )
        if row is None:
            raise TokenInvalid()
        if row.used_at is not None or row.revoked_at is not None:
            RefreshToken.objects.filter(family=row.family, revoked_at__isnull=True).update(revoked_at=now)
            reused = True
        else:
            reused = False
            if row.expires_at <= now or not row.user.is_active:
                raise TokenInvalid()
            row.used_at = now
            row.save(update_fields=["used_at", "updated_at"])
            tokens = _issue_tokens(user=row.user, family=row.family)
    if reused:
        # Raised outside the atomic block so the family revocation is committed.
        logger.warning("refresh token reuse detected; revoked family %s of user %s", row.family, row.user_id)
        raise TokenReused()
    return tokens


# Accounts whose sign-in provider gave no (verified) email get an address that can never be delivered to
# (RFC 2606 reserves .invalid), derived from the Firebase uid.
PLACEHOLDER_EMAIL_DOMAIN = "users.invalid"


def user_sign_in_with_firebase(*, id_token: str) -> AuthTokens:
    """Signs in with a Firebase ID token, creating or linking the account on first use.

    The account is, in order: the one with this Firebase uid; else the account with the token's email,
    linked to the uid now, but only when Firebase says the email is verified; else a new account (unusable
    password, welcome grant). An unverified email never reaches an account: it does not link to the
    account that has it (EmailTaken: sign in with the password, or verify the address first), and it does
    not become a new account's email (a placeholder does), so nobody can claim or pre-register someone
    else's address through a provider that does not check it.
    """
    claims = firebase.verify_id_token(id_token)  # may fetch Google's certificates: outside the transaction
    uid = claims["uid"]
    email = _email_from_claims(claims)
    email_verified = claims.get("email_verified") is True
    try:
        return _firebase_sign_in(uid=uid, email=email, email_verified=email_verified)
    except IntegrityError:
        # A concurrent first sign-in with this uid (or email) created the account: this pass finds it.
        return _firebase_sign_in(uid=uid, email=email, email_verified=email_verified)


def _email_from_claims(claims: dict) -> str | None:
    email = claims.get("email")
    if not isinstance(email, str):
        return None
    email = email.strip().lower()
    try:
        validate_email(email)
    except DjangoValidationError:
        return None
    return email if len(email) <= User._meta.get_field("email").max_length else None


@transaction.atomic
def _firebase_sign_in(*, uid: str, email: str | None, email_verified: bool) -> AuthTokens:
    created = False
    user = User.objects.select_for_update().filter(firebase_uid=uid).first()
    if user is None and email:
        user = User.objects.select_for_update().filter(email=email).first()
        # (An account with this uid found here was made by a concurrent first sign-in since the lookup above.)
        if user is not None and user.firebase_uid != uid:
            if not email_verified:
                raise EmailTaken(
                    "An account with this email already exists. Sign in with your password, "
                    "or verify your email address and try again."
                )
            if user.firebase_uid:
                raise EmailTaken(
                    "An account with this email already exists and signs in another way. "
                    "Sign in the way you did before."
                )
            user.firebase_uid = uid
            user.save(update_fields=["firebase_uid"])
            logger.info("linked Firebase uid %s to existing user %s by verified email", uid, user.id)
    if user is None:
        address = email if email and email_verified else _placeholder_email(uid)
        user = User.objects.create_user(email=address, password=None, firebase_uid=uid)
        created = True
    if not user.is_active:
        raise TokenInvalid("This account is disabled.")
    if created:
        user_welcome(user=user)
    return _issue_tokens(user=user)


def _placeholder_email(uid: str) -> str:
    return f"firebase-{hashlib.sha256(uid.encode()).hexdigest()[:32]}@{PLACEHOLDER_EMAIL_DOMAIN}"


@transaction.atomic
def device_register(*, user: User, token: str, platform: str, app_version: str, locale: str | None) -> Device:
    """One row per FCM token: a token seen before moves to this user (a shared phone, a new sign-in)."""
    token = (token or "").strip()
    if not token or len(token) > 512:
        raise ValidationFailed("The push token must be 1 to 512 characters.", field="token")
    if platform not in Platform.values:
        raise ValidationFailed("Platform must be IOS or ANDROID.", field="platform")
    app_version = (app_version or "").strip()
    if not app_version or len(app_version) > 32:
        raise ValidationFailed("Give the app version, like 1.4.2.", field="appVersion")
    locale = (locale or "").strip() or "en"
    if len(locale) > 35:  # BCP 47 tags are short ("en", "pt-BR", "zh-Hant-TW")
        raise ValidationFailed("Give the locale as a language tag, like en-US.", field="locale")
    device = Device.objects.select_for_update().filter(token=token).first()
    now = timezone.now()
    if device is None:
        try:
            with transaction.atomic():
                return Device.objects.create(
                    user=user,
                    token=token,
                    platform=platform,
                    app_version=app_version,
                    locale=locale,
                    last_seen_at=now,
                )
        except IntegrityError:  # registered concurrently; fall through to the update
            device = Device.objects.select_for_update().get(token=token)
    device.user = user
    device.platform = platform
    device.app_version = app_version
    device.locale = locale
    device.last_seen_at = now
    device.save(update_fields=["user", "platform", "app_version", "locale", "last_seen_at", "updated_at"])
    return device


def device_unregister(*, user: User, token: str) -> uuid.UUID:
    device = Device.objects.filter(user=user, token=(token or "").strip()).first()
    if device is None:
        raise NotFound("This device is not registered to your account.", field="token")
    device_id = device.id
    device.delete()
    return device_id
