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

    google = FakeGoogle(project_id="demo")
    google.install(monkeypatch)
    token = google.id_token(uid="u1", email="me@example.com", email_verified=True)
"""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import io
import json
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
        self._routes: dict[tuple[str, str], Handler] = {}
        self._lock = threading.Lock()
        self.access_tokens: list[str] = []  # issued by the OAuth token endpoint (once enable_fcm() is on)
        self.route("GET", SECURETOKEN_CERTS_URL, self._serve_certs)

    # --- The network edge --------------------------------------------------------------------------

    def route(self, method: str, url: str, handler: Handler) -> None:
        self._routes[(method.upper(), url)] = handler

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
            with fake._lock:
                fake.calls.append((request.method or "", request.url or ""))
            handler = fake._routes.get(((request.method or "").upper(), request.url or ""))
            if handler is None:
                raise requests.ConnectionError(
                    f"no network in tests: {request.method} {request.url}", request=request
                )
            response = handler(request)
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

    def enable_fcm(self) -> FakeFcm:
        """Adds the OAuth token endpoint and FCM's `messages:send` for this project; returns the FCM fake."""
        fcm = FakeFcm(self)
        self.route("POST", OAUTH_TOKEN_URL, self._serve_oauth_token)
        self.route("POST", FCM_SEND_URL.format(project_id=self.project_id), fcm._serve_send)
        return fcm

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
        authorized = authorization in {f"Bearer {token}" for token in self.google.access_tokens}
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
