"""Google's network edge for firebase-admin, faked at the `requests` adapter (the socket side of HTTP).

Everything above it is the real code path: firebase-admin's ID-token verifier, google-auth's
`transport.requests.Request`, and the cachecontrol HTTP cache that firebase-admin wraps around its
`requests.Session`. Only `requests.adapters.HTTPAdapter.send` is replaced, by a router that answers the
Google URLs it knows and refuses every other request (tests have no network), so a stray call fails loudly.

Besides serving Google's public certificates for Firebase ID tokens, `FakeGoogle` plays the Firebase Auth
server: it signs real RS256 ID tokens with a locally generated RSA key whose self-signed X.509 certificate
it publishes under the token's `kid`, exactly as Google does. More routes (an OAuth token endpoint, FCM's
`messages:send`) can be added with `route()`.

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
