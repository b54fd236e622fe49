"""Google's network edge for firebase-admin, faked at the `requests` adapter (the socket side of HTTP).

Everything above it is the real code path: firebase-admin's ID-token verifier, google-auth's
`transport.requests.Request`, and the cachecontrol HTTP cache that firebase-admin wraps around its
`requests.Session`. Only `requests.adapters.HTTPAdapter.send` is replaced, by a router that answers the
Google URLs it knows and refuses every other request (tests have no network), so a stray call fails loudly.

Besides serving Google's public certificates for Firebase ID tokens, `FakeGoogle` plays the Firebase Auth
server: it signs real RS256 ID tokens with a locally generated RSA key whose self-signed X.509 certificate
it publishes under the token's `kid`, exactly as Google does. More routes can be added with `route()`.

For push, `enable_fcm()` adds Google's OAuth 2.0 token endpoint (it checks the RS256 JWT that google-auth
signs with the key of `service_account_info()`, and issues access tokens) and FCM's HTTP v1
`messages:send` for the project (`FakeFcm`: it records each request's JSON body and answers 200 with a
message name, or what a test scripted for a token: `fcm.answer(token, FakeFcm.unregistered())`).
`enable_oauth()` adds the token endpoint alone, for any other Google API a service account calls.

For Google Play, `enable_play(package)` adds the Android Publisher API's purchase endpoints of one app
(`FakePlay`: purchases the test registers, acknowledge and consume, scripted failures) and what Pub/Sub
push needs: Google's OAuth 2.0 certificates and OIDC tokens signed with the key they publish.

    google = FakeGoogle(project_id="demo")
    google.install(monkeypatch)
    token = google.id_token(uid="u1", email="me@example.com", email_verified=True)
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import functools
import io
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import jwt
import requests
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

# Where firebase-admin fetches the certificates that sign Firebase ID tokens (firebase_admin/_token_gen.py).
SECURETOKEN_CERTS_URL = (
    "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
)
ISSUER_PREFIX = "https://securetoken.google.com/"
# What Google answers today: the certificates may be cached for about five hours.
CERTS_CACHE_CONTROL = "public, max-age=19000, must-revalidate, no-transform"
# google-auth's service-account token exchange (the `token_uri` of a service-account JSON) and FCM HTTP v1.
OAUTH_TOKEN_URL = "https://oauth2.googleapis.com/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_SEND_URL = "https://fcm.googleapis.com/v1/projects/{project_id}/messages:send"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
# The Android Publisher API's purchases of one app, and what Pub/Sub push signs its OIDC tokens with.
ANDROID_PUBLISHER_PURCHASES_URL = (
    "https://androidpublisher.googleapis.com/androidpublisher/v3/applications/{package}/purchases/"
)
OIDC_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
OIDC_ISSUER = "https://accounts.google.com"
# What the `play` fixture configures unless a test says otherwise.
PLAY_PUSH_AUDIENCE = "https://api.example.com/webhooks/google-play"
PLAY_PUSH_SERVICE_ACCOUNT = "pubsub-push@example.iam.gserviceaccount.com"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    certificate_pem: str


@functools.cache
def signing_key(kid: str) -> SigningKey:
    """An RSA key with a self-signed certificate, one per `kid` for the whole test run (keys are slow)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.system.gserviceaccount.com")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .sign(private_key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    return SigningKey(kid=kid, private_key=private_key, certificate_pem=pem)


@dataclass
class FakeResponse:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Handler = Callable[[requests.PreparedRequest], FakeResponse]


class _SocketBody(io.BytesIO):
    """A response body that ends the way http.client's does: `fp` turns None once it is all read.

    cachecontrol stores a response when its body is finished, and that is how it tells.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self._size = len(data)
        self.fp: object | None = self if data else None

    def _note_end(self) -> None:
        if self.tell() >= self._size:
            self.fp = None

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(-1 if size is None else size)
        self._note_end()
        return data

    def read1(self, size: int | None = -1) -> bytes:
        data = super().read1(-1 if size is None else size)
        self._note_end()
        return data

    def readinto(self, buffer: Any) -> int:
        count = super().readinto(buffer)
        self._note_end()
        return count


class FakeGoogle:
    def __init__(self, *, project_id: str) -> None:
        self.project_id = project_id
        self.key = signing_key("fake-google-key-1")
        # kid -> PEM certificate, as served at SECURETOKEN_CERTS_URL; tests may add or drop keys.
        self.published: dict[str, str] = {self.key.kid: self.key.certificate_pem}
        # Set to an error status (503...) to play an outage of the certificate endpoint.
        self.certs_status = HTTPStatus.OK
        self.calls: list[tuple[str, str]] = []  # (method, url) of every request that reached the network
        self.timeouts: list[Any] = []  # the `timeout` each of those requests was sent with, in the same order
        self._routes: dict[tuple[str, str], Handler] = {}
        self._prefix_routes: dict[tuple[str, str], Handler] = {}
        self._lock = threading.Lock()
        self.access_tokens: list[str] = []  # issued by the OAuth token endpoint (once enable_oauth() is on)
        self.route("GET", SECURETOKEN_CERTS_URL, self._serve_certs)

    # --- The network edge --------------------------------------------------------------------------

    def route(self, method: str, url: str, handler: Handler) -> None:
        self._routes[(method.upper(), url)] = handler

    def route_prefix(self, method: str, prefix: str, handler: Handler) -> None:
        """Answers every URL under `prefix` that has no exact route (APIs with ids in the path)."""
        self._prefix_routes[(method.upper(), prefix)] = handler

    def install(self, monkeypatch: Any) -> None:
        """Replaces the bottom of `requests` for the test (monkeypatch undoes it)."""
        monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", self._adapter_send())

    def calls_to(self, url: str) -> int:
        with self._lock:
            return sum(1 for _, called in self.calls if called == url)

    @property
    def cert_fetches(self) -> int:
        return self.calls_to(SECURETOKEN_CERTS_URL)

    def _adapter_send(self) -> Callable[..., requests.Response]:
        fake = self

        def send(
            adapter: requests.adapters.HTTPAdapter,
            request: requests.PreparedRequest,
            stream: bool = False,
            timeout: Any = None,
            verify: Any = True,
            cert: Any = None,
            proxies: Any = None,
        ) -> requests.Response:
            method, url = (request.method or "").upper(), request.url or ""
            with fake._lock:
                fake.calls.append((method, url))
                fake.timeouts.append(timeout)
            handler = fake._routes.get((method, url)) or next(
                (
                    handler
                    for (route_method, prefix), handler in fake._prefix_routes.items()
                    if route_method == method and url.startswith(prefix)
                ),
                None,
            )
            if handler is None:
                raise requests.ConnectionError(
                    f"no network in tests: {request.method} {request.url}", request=request
                )
            response = handler(request)  # a handler may raise, as a socket does (requests.ReadTimeout)
            raw = urllib3.HTTPResponse(
                body=_SocketBody(response.body),
                headers={"Content-Length": str(len(response.body)), **response.headers},
                status=response.status,
                reason=HTTPStatus(response.status).phrase,
                preload_content=False,
                decode_content=False,
                request_method=request.method,
                request_url=request.url,
            )
            # The adapter's own build_response: cachecontrol's adapter caches from here, as in production.
            return adapter.build_response(request, raw)

        return send

    def _serve_certs(self, request: requests.PreparedRequest) -> FakeResponse:
        headers = {"Date": email.utils.formatdate(usegmt=True), "Content-Type": "application/json"}
        if self.certs_status != HTTPStatus.OK:
            return FakeResponse(status=self.certs_status, headers=headers, body=b'{"error": "unavailable"}')
        headers["Cache-Control"] = CERTS_CACHE_CONTROL
        return FakeResponse(headers=headers, body=json.dumps(self.published).encode())

    # --- Firebase Auth: ID tokens -------------------------------------------------------------------

    def id_token(
        self,
        *,
        uid: str,
        email: str | None = None,
        email_verified: bool = False,
        provider: str = "password",
        project_id: str | None = None,
        key: SigningKey | None = None,
        kid: str | None = None,
        issued_at: int | None = None,
        lifetime_seconds: int = 3600,
        **claims: Any,
    ) -> str:
        """A Firebase ID token as the Auth server issues it for `project_id` (this fake's by default),
        signed with `key` (the published one by default) under header `kid` (the key's own by default).
        `claims` override or add payload claims (`aud=`, `iss=`...)."""
        key = key or self.key
        project_id = project_id or self.project_id
        now = int(time.time()) if issued_at is None else issued_at
        identities: dict[str, list[str]] = {}
        if provider not in ("password", "anonymous", "phone", "custom"):
            identities[provider] = [f"{provider}-id-{uid}"]
        if email is not None:
            identities["email"] = [email]
        payload: dict[str, Any] = {
            "iss": ISSUER_PREFIX + project_id,
            "aud": project_id,
            "auth_time": now,
            "user_id": uid,
            "sub": uid,
            "iat": now,
            "exp": now + lifetime_seconds,
            "firebase": {"identities": identities, "sign_in_provider": provider},
        }
        if email is not None:
            payload["email"] = email
            payload["email_verified"] = email_verified
        payload.update(claims)
        return jwt.encode(payload, key.private_key, algorithm="RS256", headers={"kid": kid or key.kid})

    # --- Service accounts: OAuth 2.0 access tokens --------------------------------------------------

    def service_account_info(self) -> dict[str, str]:
        """A service-account key JSON of this project, as the Firebase console downloads it."""
        key = signing_key("fake-service-account-1")
        private_key = key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": key.kid,
            "private_key": private_key.decode(),
            "client_email": self.service_account_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": OAUTH_TOKEN_URL,
        }

    @property
    def service_account_email(self) -> str:
        return f"firebase-adminsdk-fake@{self.project_id}.iam.gserviceaccount.com"

    def enable_oauth(self) -> None:
        """Adds the OAuth token endpoint, where google-auth trades the service account's JWT for access
        tokens (`access_tokens`), which every fake API here checks."""
        self.route("POST", OAUTH_TOKEN_URL, self._serve_oauth_token)

    def enable_fcm(self) -> FakeFcm:
        """Adds the OAuth token endpoint and FCM's `messages:send` for this project; returns the FCM fake."""
        fcm = FakeFcm(self)
        self.enable_oauth()
        self.route("POST", FCM_SEND_URL.format(project_id=self.project_id), fcm._serve_send)
        return fcm

    def enable_play(
        self,
        package: str,
        *,
        push_audience: str = PLAY_PUSH_AUDIENCE,
        push_service_account: str = PLAY_PUSH_SERVICE_ACCOUNT,
    ) -> FakePlay:
        """Adds the OAuth token endpoint, the Android Publisher purchases of `package`, and Google's OAuth
        2.0 certificates for Pub/Sub push tokens; returns the Play fake. Another package may be enabled
        beside it (an app whose tokens ours must not accept); the last one enabled serves the certificates."""
        self.enable_oauth()
        return FakePlay(self, package, push_audience=push_audience, push_service_account=push_service_account)

    def authorized(self, request: requests.PreparedRequest) -> bool:
        """Whether the request carries an access token that the OAuth endpoint issued."""
        authorization = request.headers.get("Authorization", "")
        with self._lock:
            return authorization in {f"Bearer {token}" for token in self.access_tokens}

    def _serve_oauth_token(self, request: requests.PreparedRequest) -> FakeResponse:
        """The JWT-bearer grant: the assertion must be signed by the service account's key for this URL."""
        body = request.body.decode() if isinstance(request.body, bytes) else request.body or ""
        form = dict(urllib.parse.parse_qsl(body))
        headers = {"Content-Type": "application/json"}

        def refuse(description: str) -> FakeResponse:
            error = {"error": "invalid_grant", "error_description": description}
            return FakeResponse(status=400, headers=headers, body=json.dumps(error).encode())

        if form.get("grant_type") != JWT_BEARER_GRANT:
            return refuse("unsupported grant type")
        key = signing_key("fake-service-account-1")
        try:
            claims = jwt.decode(
                form.get("assertion", ""),
                key.private_key.public_key(),
                algorithms=["RS256"],
                audience=OAUTH_TOKEN_URL,
            )
        except jwt.PyJWTError as exc:
            return refuse(f"Invalid JWT Signature: {exc}")
        if claims.get("iss") != self.service_account_email or "scope" not in claims:
            return refuse("Invalid JWT: wrong issuer or no scope")
        with self._lock:
            token = f"ya29.fake-access-token-{len(self.access_tokens) + 1}"
            self.access_tokens.append(token)
        answer = {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}
        return FakeResponse(headers=headers, body=json.dumps(answer).encode())


@dataclass(frozen=True)
class FcmRequest:
    body: dict[str, Any]  # the JSON firebase-admin posted
    authorization: str
    at: float  # time.time() when it reached the network

    @property
    def message(self) -> dict[str, Any]:
        return self.body["message"]


class FakeFcm:
    """FCM HTTP v1 `messages:send` of one project. Answers with a new message name unless a test scripted
    answers for the message's token (`answer()`); a request without a valid access token is refused with 401,
    as FCM does. The error bodies are FCM's (google.rpc.Status with an FcmError detail)."""

    def __init__(self, google: FakeGoogle) -> None:
        self.google = google
        self.requests: list[FcmRequest] = []
        self._answers: dict[str, list[FakeResponse]] = {}
        self._lock = threading.Lock()

    def answer(self, token: str, *responses: FakeResponse) -> None:
        """The next answers to messages for `token`, in order; after them, success."""
        with self._lock:
            self._answers.setdefault(token, []).extend(responses)

    def requests_to(self, token: str) -> list[FcmRequest]:
        with self._lock:
            return [request for request in self.requests if request.message.get("token") == token]

    def message_name(self, number: int) -> str:
        return f"projects/{self.google.project_id}/messages/0:{number}"

    # --- Answers ----------------------------------------------------------------------------------------

    @staticmethod
    def error(
        http_status: int,
        status: str,
        message: str,
        error_code: str | None = None,
        retry_after: str | None = None,
    ) -> FakeResponse:
        details = [{"@type": FCM_ERROR_TYPE, "errorCode": error_code}] if error_code else []
        body = {"error": {"code": http_status, "message": message, "status": status, "details": details}}
        headers = {"Content-Type": "application/json; charset=UTF-8"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        return FakeResponse(status=http_status, headers=headers, body=json.dumps(body).encode())

    @classmethod
    def unregistered(cls) -> FakeResponse:
        return cls.error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")

    @classmethod
    def sender_id_mismatch(cls) -> FakeResponse:
        return cls.error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")

    @classmethod
    def quota_exceeded(cls, retry_after: str | None = None) -> FakeResponse:
        return cls.error(
            429, "RESOURCE_EXHAUSTED", "Quota exceeded for the device.", "QUOTA_EXCEEDED", retry_after
        )

    @classmethod
    def unavailable(cls) -> FakeResponse:
        return cls.error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")

    @classmethod
    def internal(cls) -> FakeResponse:
        return cls.error(500, "INTERNAL", "Internal error encountered.", "INTERNAL")

    @classmethod
    def third_party_auth_error(cls) -> FakeResponse:
        return cls.error(
            401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service", "THIRD_PARTY_AUTH_ERROR"
        )

    @classmethod
    def invalid_argument(cls) -> FakeResponse:
        return cls.error(
            400,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            "INVALID_ARGUMENT",
        )

    # --- The endpoint -----------------------------------------------------------------------------------

    def _serve_send(self, request: requests.PreparedRequest) -> FakeResponse:
        body = json.loads(request.body or b"{}")
        authorization = request.headers.get("Authorization", "")
        authorized = self.google.authorized(request)
        with self._lock:
            self.requests.append(FcmRequest(body=body, authorization=authorization, at=time.time()))
            number = len(self.requests)
            scripted = self._answers.get(body.get("message", {}).get("token", "")) if authorized else None
            answer = scripted.pop(0) if scripted else None
        if not authorized:
            return self.error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if answer is not None:
            return answer
        name = {"name": self.message_name(number)}
        return FakeResponse(headers={"Content-Type": "application/json"}, body=json.dumps(name).encode())


@dataclass(frozen=True)
class PlayRequest:
    method: str
    url: str
    authorization: str
    body: bytes


# What a scripted answer may be: a response, or an exception the socket raises (`FakePlay.timeout()`).
PlayAnswer = FakeResponse | Exception


class FakePlay:
    """The Android Publisher API's purchases of one app, and Pub/Sub push's OIDC side.

    Purchases are registered by the test (`add_product`, `add_subscription`) and kept as the JSON Google
    answers (`products`, `subscriptions`: token -> ProductPurchaseV2 / SubscriptionPurchaseV2), which a test
    may also edit directly. The endpoints:

    - GET `productsv2/tokens/{token}` and `subscriptionsv2/tokens/{token}`: the purchase, 404 for a token
      this app does not have (another app's, made up).
    - POST `products/{productId}/tokens/{token}:consume` and
      `subscriptions/{productId}/tokens/{token}:acknowledge`: marks the purchase and records it in
      `consumed` / `acknowledged`; consuming or acknowledging twice answers 400, as Google refuses to.

    Every request needs an access token that the OAuth endpoint issued (401 otherwise, and always 401 while
    `accept_access_tokens` is off); `answer(token, ...)` scripts the next answers for requests naming a token
    (503, 404, a timeout...). Every request is recorded in `requests`.

    For push, Google's OAuth 2.0 certificates are served at OIDC_CERTS_URL (`certs_status` plays an
    outage); `oidc_token()` mints the token Pub/Sub sends, `push_body()` wraps a notification in Pub/Sub's
    push envelope, and the `*_notification()` methods build Play's DeveloperNotifications.
    """

    def __init__(self, google: FakeGoogle, package: str, *, push_audience: str, push_service_account: str):
        self.google = google
        self.package = package
        self.push_audience = push_audience
        self.push_service_account = push_service_account
        self.products: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.requests: list[PlayRequest] = []
        self.consumed: list[tuple[str, str]] = []  # (product id, token)
        self.acknowledged: list[tuple[str, str]] = []  # (product id, token)
        self.accept_access_tokens = True
        self.oidc_key = signing_key("fake-google-oidc-1")
        self.oidc_published: dict[str, str] = {self.oidc_key.kid: self.oidc_key.certificate_pem}
        self.certs_status = HTTPStatus.OK
        self._answers: dict[str, list[PlayAnswer]] = {}
        self._orders = 0
        self._messages = 0
        self._lock = threading.Lock()
        self.purchases_url = ANDROID_PUBLISHER_PURCHASES_URL.format(package=package)
        google.route_prefix("GET", self.purchases_url, self._serve)
        google.route_prefix("POST", self.purchases_url, self._serve)
        google.route("GET", OIDC_CERTS_URL, self._serve_oidc_certs)

    # --- Purchases -------------------------------------------------------------------------------------

    @staticmethod
    def new_token() -> str:
        """A purchase token shaped like Play's (letters, then a long url-safe tail)."""
        return f"{secrets.token_hex(12)}.AO-J1O{secrets.token_urlsafe(120)}"

    def new_order_id(self) -> str:
        with self._lock:
            self._orders += 1
            number = self._orders
        return f"GPA.3300-{number:04d}-{secrets.randbelow(10_000):04d}-{secrets.randbelow(100_000):05d}"

    def add_product(
        self,
        product_id: str,
        *,
        token: str | None = None,
        state: str = "PURCHASED",
        order_id: str | None = None,
        with_order_id: bool = True,
        account_id: str | None = None,
        quantity: int = 1,
        test: bool = False,
        acknowledged: bool = False,
        consumed: bool = False,
        purchased_at: dt.datetime | None = None,
    ) -> str:
        """Registers a one-time product purchase (`state`: PURCHASED, PENDING or CANCELLED); returns its
        token. `order_id` is generated unless given; `with_order_id=False` leaves it out, as some test
        purchases do."""
        token = token or self.new_token()
        purchase: dict[str, Any] = {
            "kind": "androidpublisher#productPurchaseV2",
            "productLineItem": [
                {
                    "productId": product_id,
                    "productOfferDetails": {
                        "quantity": quantity,
                        "refundableQuantity": quantity,
                        "consumptionState": (
                            "CONSUMPTION_STATE_CONSUMED"
                            if consumed
                            else "CONSUMPTION_STATE_YET_TO_BE_CONSUMED"
                        ),
                    },
                }
            ],
            "purchaseStateContext": {"purchaseState": state},
            "regionCode": "US",
            "acknowledgementState": (
                "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED"
                if acknowledged or consumed
                else "ACKNOWLEDGEMENT_STATE_PENDING"
            ),
        }
        if with_order_id:
            purchase["orderId"] = order_id or self.new_order_id()
        if state == "PURCHASED":
            purchase["purchaseCompletionTime"] = _rfc3339(purchased_at or dt.datetime.now(dt.UTC))
        if account_id is not None:
            purchase["obfuscatedExternalAccountId"] = account_id
        if test:
            purchase["testPurchaseContext"] = {"fopType": "TEST"}
        with self._lock:
            self.products[token] = purchase
        return token

    def add_subscription(
        self,
        product_id: str,
        *,
        token: str | None = None,
        state: str = "ACTIVE",
        order_id: str | None = None,
        with_order_id: bool = True,
        renewals: int = 0,
        started_at: dt.datetime | None = None,
        expires_at: dt.datetime | None = None,
        auto_renew: bool = True,
        account_id: str | None = None,
        test: bool = False,
        acknowledged: bool = False,
        linked_purchase_token: str = "",
    ) -> str:
        """Registers a subscription purchase; returns its token. `state` is SubscriptionState without its
        prefix (ACTIVE, IN_GRACE_PERIOD, ON_HOLD, PAUSED, CANCELED, EXPIRED, PENDING,
        PENDING_PURCHASE_CANCELED). Renewal n is order `order_id..{n - 1}`, as Google numbers them."""
        token = token or self.new_token()
        now = dt.datetime.now(dt.UTC)
        line_item: dict[str, Any] = {
            "productId": product_id,
            "expiryTime": _rfc3339(expires_at or now + dt.timedelta(days=30)),
            "autoRenewingPlan": {"autoRenewEnabled": auto_renew},
            "offerDetails": {"basePlanId": "monthly"},
        }
        if with_order_id:
            base = order_id or self.new_order_id()
            line_item["latestSuccessfulOrderId"] = f"{base}..{renewals - 1}" if renewals else base
        subscription: dict[str, Any] = {
            "kind": "androidpublisher#subscriptionPurchaseV2",
            "regionCode": "US",
            "lineItems": [line_item],
            "startTime": _rfc3339(started_at or now - dt.timedelta(days=1)),
            "subscriptionState": f"SUBSCRIPTION_STATE_{state}",
            "acknowledgementState": (
                "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED" if acknowledged else "ACKNOWLEDGEMENT_STATE_PENDING"
            ),
        }
        if linked_purchase_token:
            subscription["linkedPurchaseToken"] = linked_purchase_token
        if account_id is not None:
            subscription["externalAccountIdentifiers"] = {"obfuscatedExternalAccountId": account_id}
        if test:
            subscription["testPurchase"] = {}
        with self._lock:
            self.subscriptions[token] = subscription
        return token

    def renew(self, token: str, *, expires_at: dt.datetime | None = None) -> str:
        """Charges the next period (a new order `..n`, the expiry moved on, ACTIVE); returns the order id."""
        with self._lock:
            subscription = self.subscriptions[token]
            line_item = subscription["lineItems"][0]
            base, _, renewal = line_item["latestSuccessfulOrderId"].partition("..")
            order_id = f"{base}..{int(renewal) + 1 if renewal else 0}"
            line_item["latestSuccessfulOrderId"] = order_id
            expiry = dt.datetime.fromisoformat(line_item["expiryTime"])
            line_item["expiryTime"] = _rfc3339(expires_at or expiry + dt.timedelta(days=30))
            subscription["subscriptionState"] = "SUBSCRIPTION_STATE_ACTIVE"
        return order_id

    def set_subscription_state(
        self,
        token: str,
        state: str,
        *,
        expires_at: dt.datetime | None = None,
        auto_renew: bool | None = None,
    ) -> None:
        with self._lock:
            subscription = self.subscriptions[token]
            subscription["subscriptionState"] = f"SUBSCRIPTION_STATE_{state}"
            line_item = subscription["lineItems"][0]
            if expires_at is not None:
                line_item["expiryTime"] = _rfc3339(expires_at)
            if auto_renew is not None:
                line_item["autoRenewingPlan"] = {"autoRenewEnabled": auto_renew}

    # --- Scripted answers ------------------------------------------------------------------------------

    def answer(self, token: str, *answers: PlayAnswer) -> None:
        """The next answers to requests naming `token`, in order (after the access-token check); then the
        purchase as registered."""
        with self._lock:
            self._answers.setdefault(token, []).extend(answers)

    @staticmethod
    def error(status: int, message: str, reason: str = "", retry_after: str | None = None) -> FakeResponse:
        """An error as Google APIs answer it (google.rpc.Status with the legacy `errors` list)."""
        body = {
            "error": {
                "code": status,
                "message": message,
                "errors": [{"message": message, "domain": "androidpublisher", "reason": reason}],
                "status": {
                    400: "INVALID_ARGUMENT",
                    401: "UNAUTHENTICATED",
                    403: "PERMISSION_DENIED",
                    404: "NOT_FOUND",
                    410: "NOT_FOUND",
                    429: "RESOURCE_EXHAUSTED",
                    500: "INTERNAL",
                    503: "UNAVAILABLE",
                }.get(status, "UNKNOWN"),
            }
        }
        headers = {"Content-Type": "application/json; charset=UTF-8"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        return FakeResponse(status=status, headers=headers, body=json.dumps(body).encode())

    @classmethod
    def not_found(cls) -> FakeResponse:
        return cls.error(404, "The purchase token was not found.", "purchaseTokenNotFound")

    @classmethod
    def invalid(cls) -> FakeResponse:
        return cls.error(400, "Invalid Value", "invalid")

    @classmethod
    def gone(cls) -> FakeResponse:
        return cls.error(
            410, "The subscription purchase is no longer available for query.", "purchaseExpired"
        )

    @classmethod
    def permission_denied(cls) -> FakeResponse:
        return cls.error(
            403,
            "The current user has insufficient permissions to perform the requested operation.",
            "permissionDenied",
        )

    @classmethod
    def unavailable(cls) -> FakeResponse:
        return cls.error(503, "The service is currently unavailable.", "backendError")

    @classmethod
    def rate_limited(cls, retry_after: str | None = None) -> FakeResponse:
        return cls.error(429, "Rate limit exceeded.", "rateLimitExceeded", retry_after)

    @staticmethod
    def timeout() -> Exception:
        return requests.ReadTimeout("fake: Google did not answer in time")

    # --- The endpoints ---------------------------------------------------------------------------------

    def _serve(self, request: requests.PreparedRequest) -> FakeResponse:
        body = request.body if isinstance(request.body, bytes) else (request.body or "").encode()
        url = request.url or ""
        with self._lock:
            self.requests.append(
                PlayRequest(request.method or "", url, request.headers.get("Authorization", ""), body)
            )
        if not (self.accept_access_tokens and self.google.authorized(request)):
            return self.error(401, "Request had invalid authentication credentials.", "authError")
        # The path after `purchases/`: each segment percent-decoded on its own, as Google routes it.
        segments = url[len(self.purchases_url) :].split("?", 1)[0].split("/")
        action = ""
        if request.method == "POST" and ":" in segments[-1]:
            segments[-1], action = segments[-1].rsplit(":", 1)
        segments = [urllib.parse.unquote(segment) for segment in segments]
        token = segments[-1]
        with self._lock:
            scripted = self._answers.get(token)
            answer = scripted.pop(0) if scripted else None
        if isinstance(answer, Exception):
            raise answer
        if answer is not None:
            return answer
        match request.method, segments[:-1], action:
            case "GET", ["productsv2", "tokens"], "":
                return self._purchase(self.products.get(token))
            case "GET", ["subscriptionsv2", "tokens"], "":
                return self._purchase(self.subscriptions.get(token))
            case "POST", ["products", product_id, "tokens"], "consume":
                return self._consume(product_id, token)
            case "POST", ["subscriptions", product_id, "tokens"], "acknowledge":
                return self._acknowledge(product_id, token)
        return self.error(404, "Method not found.", "notFound")

    def _purchase(self, purchase: dict[str, Any] | None) -> FakeResponse:
        if purchase is None:
            return self.not_found()
        with self._lock:
            body = json.dumps(purchase).encode()
        return FakeResponse(headers={"Content-Type": "application/json; charset=UTF-8"}, body=body)

    def _consume(self, product_id: str, token: str) -> FakeResponse:
        with self._lock:
            purchase = self.products.get(token)
            if purchase is None or purchase["productLineItem"][0]["productId"] != product_id:
                return self.not_found()
            offer = purchase["productLineItem"][0]["productOfferDetails"]
            if purchase["purchaseStateContext"]["purchaseState"] != "PURCHASED":
                return self.error(
                    400, "The purchase is not in a state that can be consumed.", "invalidPurchaseState"
                )
            if offer["consumptionState"] == "CONSUMPTION_STATE_CONSUMED":
                return self.error(400, "The purchase has already been consumed.", "productAlreadyConsumed")
            offer["consumptionState"] = "CONSUMPTION_STATE_CONSUMED"
            purchase["acknowledgementState"] = "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED"
            self.consumed.append((product_id, token))
        return FakeResponse(headers={"Content-Type": "application/json; charset=UTF-8"}, body=b"")

    def _acknowledge(self, product_id: str, token: str) -> FakeResponse:
        with self._lock:
            subscription = self.subscriptions.get(token)
            if subscription is None or product_id not in {i["productId"] for i in subscription["lineItems"]}:
                return self.not_found()
            if subscription["acknowledgementState"] == "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED":
                return self.error(
                    400, "The subscription purchase has already been acknowledged.", "invalidValue"
                )
            subscription["acknowledgementState"] = "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED"
            self.acknowledged.append((product_id, token))
        return FakeResponse(headers={"Content-Type": "application/json; charset=UTF-8"}, body=b"")

    # --- Pub/Sub push ----------------------------------------------------------------------------------

    def _serve_oidc_certs(self, request: requests.PreparedRequest) -> FakeResponse:
        headers = {"Date": email.utils.formatdate(usegmt=True), "Content-Type": "application/json"}
        if self.certs_status != HTTPStatus.OK:
            return FakeResponse(status=self.certs_status, headers=headers, body=b'{"error": "unavailable"}')
        headers["Cache-Control"] = CERTS_CACHE_CONTROL
        return FakeResponse(headers=headers, body=json.dumps(self.oidc_published).encode())

    @property
    def cert_fetches(self) -> int:
        return self.google.calls_to(OIDC_CERTS_URL)

    def oidc_token(
        self,
        *,
        audience: str | None = None,
        email: str | None = None,
        email_verified: bool = True,
        key: SigningKey | None = None,
        kid: str | None = None,
        issued_at: int | None = None,
        lifetime_seconds: int = 3600,
        **claims: Any,
    ) -> str:
        """The OIDC token Pub/Sub push sends for a subscription with this audience and service account
        (the fake's own by default), signed with `key` (the published one by default) under header `kid`.
        `claims` override or add payload claims (`iss=`...)."""
        key = key or self.oidc_key
        now = int(time.time()) if issued_at is None else issued_at
        payload: dict[str, Any] = {
            "iss": OIDC_ISSUER,
            "aud": self.push_audience if audience is None else audience,
            "azp": "100000000000000000002",
            "sub": "100000000000000000002",
            "email": self.push_service_account if email is None else email,
            "email_verified": email_verified,
            "iat": now,
            "exp": now + lifetime_seconds,
        }
        payload.update(claims)
        return jwt.encode(payload, key.private_key, algorithm="RS256", headers={"kid": kid or key.kid})

    def authorization(self, **token_options: Any) -> str:
        """The Authorization header of a push: `Bearer <oidc_token(**token_options)>`."""
        return f"Bearer {self.oidc_token(**token_options)}"

    def push_body(
        self,
        notification: dict[str, Any],
        *,
        message_id: str | None = None,
        publish_time: str | None = None,
    ) -> bytes:
        """Pub/Sub's push envelope around a DeveloperNotification, as the HTTP body Pub/Sub posts."""
        with self._lock:
            self._messages += 1
            number = self._messages
        message_id = message_id or f"1369693469{number:05d}"
        data = base64.b64encode(json.dumps(notification).encode()).decode()
        envelope = {
            "message": {
                "attributes": {},
                "data": data,
                "messageId": message_id,
                "message_id": message_id,
                "publishTime": publish_time or _rfc3339(dt.datetime.now(dt.UTC)),
                "publish_time": publish_time or _rfc3339(dt.datetime.now(dt.UTC)),
            },
            "subscription": "projects/diffuse-play/subscriptions/play-rtdn-push",
        }
        return json.dumps(envelope).encode()

    def developer_notification(
        self, *, package: str | None = None, event_time_ms: int | None = None, **kind: Any
    ) -> dict[str, Any]:
        """A DeveloperNotification of this app (or `package`) with one kind of notification in `kind`."""
        return {
            "version": "1.0",
            "packageName": package or self.package,
            "eventTimeMillis": str(int(time.time() * 1000) if event_time_ms is None else event_time_ms),
            **kind,
        }

    def subscription_notification(
        self, token: str, notification_type: int, *, subscription_id: str | None = None, **options: Any
    ) -> dict[str, Any]:
        """A SubscriptionNotification; `subscription_id` is the registered subscription's product by
        default (Google marks it deprecated but still sends it)."""
        notice: dict[str, Any] = {
            "version": "1.0",
            "notificationType": notification_type,
            "purchaseToken": token,
        }
        if subscription_id is None and token in self.subscriptions:
            subscription_id = self.subscriptions[token]["lineItems"][0]["productId"]
        if subscription_id is not None:
            notice["subscriptionId"] = subscription_id
        return self.developer_notification(subscriptionNotification=notice, **options)

    def one_time_notification(
        self, token: str, notification_type: int, sku: str, **options: Any
    ) -> dict[str, Any]:
        notice = {"version": "1.0", "notificationType": notification_type, "purchaseToken": token, "sku": sku}
        return self.developer_notification(oneTimeProductNotification=notice, **options)

    def voided_notification(
        self, token: str, order_id: str, *, product_type: int = 2, refund_type: int = 1, **options: Any
    ) -> dict[str, Any]:
        """A VoidedPurchaseNotification (`product_type` 1 subscription, 2 one-time; `refund_type` 1 full,
        2 quantity-based partial)."""
        notice = {
            "purchaseToken": token,
            "orderId": order_id,
            "productType": product_type,
            "refundType": refund_type,
        }
        return self.developer_notification(voidedPurchaseNotification=notice, **options)

    def test_notification(self, **options: Any) -> dict[str, Any]:
        return self.developer_notification(testNotification={"version": "1.0"}, **options)


def _rfc3339(moment: dt.datetime) -> str:
    """A timestamp as Google's JSON writes it: UTC, `Z`, milliseconds."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
