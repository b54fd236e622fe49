"""Verification latency per store: how long verifyPurchase's store check and the whole grant take.

    .venv/bin/python bench/purchases_verify.py           # BENCH_ITERATIONS (default 200)

In one process, on the embedded stack (SQLite in a temporary VAR_DIR): the real app-store-server-library
and google-auth, with the stores' network edge faked exactly as in the tests (tests/fakes: a test
certificate chain signing StoreKit JWS, the Android Publisher API and Google's OAuth/OIDC endpoints
answered at `requests`' adapter, so no network time is in the figures; add the stores' real round trip,
typically 50-300 ms for Google's API, none for Apple, whose JWS verify offline). Per store it prints
p50/p95/mean milliseconds of:
  - the adapter alone (App Store: chain + signature + claims; Google Play: the productsv2 GET),
  - purchase_verify (the adapter, then the ledger grant in its transaction), a new purchase each time,
  - a server notification (verify + apply: App Store signed payload; Google Play OIDC check + parse +
    purchase GET + apply).
Apple's OCSP checks are off here (APPLE_ONLINE_CHECKS=0; with them on, the first check per chain costs
two OCSP round trips and is then cached for 15 minutes).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ITERATIONS = int(os.environ.get("BENCH_ITERATIONS", "200"))


def _setup() -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "APP_ENV"):
        os.environ.pop(name, None)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="backend.settings",
        VAR_DIR=tempfile.mkdtemp(prefix="bench-purchases-"),
        DEBUG="0",
        LOG_LEVEL="WARNING",
        PURCHASES_MAX_CALLS_PER_WINDOW="1000000",
        EMBEDDED_WORKER="0",
        EMBEDDED_GPU_WORKER="0",
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("load_products", verbosity=0)


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def _row(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    median, mean = statistics.median(ordered), statistics.mean(ordered)
    return f"  {name:<44} p50 {median:7.2f}  p95 {p95:7.2f}  mean {mean:7.2f}"


def _user():
    from apps.accounts.models import User

    return User.objects.create_user(f"bench-{uuid.uuid4().hex[:12]}@example.com", "a-long-password-42")


def bench_app_store(tmp: Path) -> list[str]:
    import pytest
    from django.test import override_settings

    from apps.purchases.services import notification_receive, purchase_verify
    from apps.purchases.stores import apple
    from tests.fakes.apple import FakeAppStore

    store = FakeAppStore()
    patch = pytest.MonkeyPatch()
    store.install(patch)
    pack = "com.example.diffuse.credits100"
    with override_settings(
        APPLE_BUNDLE_ID=store.bundle_id,
        APPLE_APP_APPLE_ID=store.app_apple_id,
        APPLE_ROOT_CERTIFICATES=[str(store.write_root_certificate(tmp))],
        APPLE_ONLINE_CHECKS=False,
    ):
        user = _user()
        adapter, full, notice = [], [], []
        for _ in range(ITERATIONS):
            jws = store.signed_transaction(productId=pack, appAccountToken=str(user.pk))
            adapter.append(_timed(lambda jws=jws: apple.verify_transaction(jws)))
            jws = store.signed_transaction(productId=pack, appAccountToken=str(user.pk))
            full.append(
                _timed(lambda jws=jws: purchase_verify(user=user, platform="IOS", signed_transaction=jws))
            )
            payload = store.signed_notification(
                "ONE_TIME_CHARGE",
                transaction=store.transaction_claims(productId=pack, appAccountToken=str(user.pk)),
            )
            notice.append(_timed(lambda p=payload: notification_receive(apple.verify_notification(p))))
    patch.undo()
    return [
        "App Store (app-store-server-library, offline chain checks):",
        _row("verify_transaction (adapter)", adapter),
        _row("purchase_verify (adapter + grant)", full),
        _row("server notification (verify + apply)", notice),
    ]


def bench_google_play(tmp: Path) -> list[str]:
    import pytest
    from django.test import override_settings

    from apps.purchases.services import notification_receive, purchase_verify
    from apps.purchases.stores import ProductType, google
    from tests.fakes.google import FakeGoogle

    fake_google = FakeGoogle(project_id="bench")
    patch = pytest.MonkeyPatch()
    fake_google.install(patch)
    play = fake_google.enable_play("com.example.diffuse")
    credentials = tmp / "play.json"
    credentials.write_text(json.dumps(fake_google.service_account_info()))
    with override_settings(
        GOOGLE_PLAY_PACKAGE_NAME="com.example.diffuse",
        GOOGLE_PLAY_CREDENTIALS=str(credentials),
        GOOGLE_PLAY_PUSH_AUDIENCE=play.push_audience,
        GOOGLE_PLAY_PUSH_SERVICE_ACCOUNT=play.push_service_account,
    ):
        user = _user()
        first = play.add_product("credits_100", account_id=str(user.pk))
        cold = _timed(lambda: google.verify_purchase(first, "credits_100", ProductType.CONSUMABLE))
        adapter, full, notice = [], [], []
        for _ in range(ITERATIONS):
            token = play.add_product("credits_100", account_id=str(user.pk))
            adapter.append(
                _timed(lambda t=token: google.verify_purchase(t, "credits_100", ProductType.CONSUMABLE))
            )
            token = play.add_product("credits_100", account_id=str(user.pk))
            full.append(
                _timed(
                    lambda t=token: purchase_verify(
                        user=user, platform="ANDROID", purchase_token=t, product_id="credits_100"
                    )
                )
            )
            token = play.add_product("credits_100", account_id=str(user.pk))
            body = play.push_body(play.one_time_notification(token, 1, "credits_100"))
            header = play.authorization()

            def push(body=body, header=header) -> None:
                google.authenticate_push(header)
                notification_receive(google.parse_push(body))

            notice.append(_timed(push))
    patch.undo()
    return [
        "Google Play (google-auth, Android Publisher API at a fake HTTP edge):",
        f"  first call (service-account sign-in + GET)   {cold:7.2f} ms",
        _row("verify_purchase (adapter: productsv2 GET)", adapter),
        _row("purchase_verify (adapter + grant)", full),
        _row("RTDN push (OIDC + parse + GET + apply)", notice),
    ]


def bench_local_store() -> list[str]:
    from apps.purchases.services import purchase_verify

    user = _user()
    full = [
        _timed(
            lambda i=i: purchase_verify(
                user=user, platform="IOS", signed_transaction=f"local-test:com.example.diffuse.credits100:{i}"
            )
        )
        for i in range(ITERATIONS)
    ]
    return ["Local test store (embedded mode):", _row("purchase_verify (grant only)", full)]


def main() -> None:
    _setup()
    tmp = Path(tempfile.mkdtemp(prefix="bench-purchases-files-"))
    print(
        f"purchases verification latency, {ITERATIONS} purchases each, ms "
        f"(SQLite, one thread, {os.cpu_count()} CPUs)"
    )
    for line in [*bench_app_store(tmp), *bench_google_play(tmp), *bench_local_store()]:
        print(line)


if __name__ == "__main__":
    main()
