"""The App Store, faked where it meets our server: what Apple signs, and Apple's HTTP edge.

`FakeAppStore` signs StoreKit 2 transactions, renewal infos and App Store Server Notifications V2 the way
Apple does: ES256 JWS whose `x5c` header carries [leaf, intermediate, root], a chain that has Apple's
marker extensions (1.2.840.113635.100.6.11.1 on the leaf, 1.2.840.113635.100.6.2.1 on the intermediate) and
passes OpenSSL's X509_STRICT checks. Only the root differs: it is made here, and written to a file for
`settings.APPLE_ROOT_CERTIFICATES`, so Apple's real app-store-server-library verifies everything else.

`install()` replaces `requests.adapters.HTTPAdapter.send` (the socket side of HTTP) with a router for what
the library asks of Apple over the network: the OCSP responder named in the chain's AIA extensions (online
checks), and the App Store Server API (transaction history and subscription statuses, with the `.p8` key
of `write_api_key()`). Any other request fails loudly: tests have no network.

It is a plain class (pytest is not needed), so a bench can sign with it too:

    store = FakeAppStore()
    settings.APPLE_ROOT_CERTIFICATES = [str(store.write_root_certificate(tmp_path))]
    signed = store.signed_transaction(productId="credits_100")
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import itertools
import json
import re
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import jwt
import requests
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

BUNDLE_ID = "com.example.diffuse"
APP_APPLE_ID = 1_234_567_890
LEAF_MARKER_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.11.1")
INTERMEDIATE_MARKER_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.2.1")
# Where the chain's AIA extensions send OCSP requests (Apple's is http://ocsp.apple.com/ocsp03-...).
OCSP_URL = "http://ocsp.fake-apple.test/ocsp03-wwdrg6"
API_HOSTS = {
    "api.storekit.apple.com": "Production",
    "api.storekit-sandbox.apple.com": "Sandbox",
}
# Apple Root CA - G3's validity.
ROOT_VALIDITY = (
    dt.datetime(2014, 4, 30, 18, 19, 6, tzinfo=dt.UTC),
    dt.datetime(2039, 4, 30, 18, 19, 6, tzinfo=dt.UTC),
)
API_AUDIENCE = "appstoreconnect-v1"
SUBSCRIPTION = "Auto-Renewable Subscription"
CONSUMABLE = "Consumable"
DAY_MS = 24 * 3600 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fake Apple Inc."),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


@dataclass(frozen=True)
class CertificateChain:
    """Leaf, intermediate and root as Apple's are made; `build()` can leave out what a test wants missing."""

    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey

    @classmethod
    def build(
        cls,
        *,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        leaf_marker: bool = True,
        intermediate_marker: bool = True,
        root: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    ) -> CertificateChain:
        """A fresh intermediate and leaf valid from `not_before` to `not_after` (yesterday to a year on by
        default), under `root` (certificate, key) when given, else under a new self-signed root that is
        valid as long as Apple's."""
        now = dt.datetime.now(dt.UTC)
        not_before = not_before or now - dt.timedelta(days=1)
        not_after = not_after or now + dt.timedelta(days=365)
        if root is None:
            root_key = _key()
            root_name = _name("Fake Apple Root CA - G3")
            root_cert = (
                _builder(root_name, root_name, root_key.public_key(), *ROOT_VALIDITY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(_ca_key_usage(), critical=True)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
                )
                .sign(root_key, hashes.SHA384())
            )
        else:
            root_cert, root_key = root
        intermediate_key = _key()
        intermediate_builder = (
            _builder(
                _name("Fake Apple Worldwide Developer Relations Certification Authority"),
                root_cert.subject,
                intermediate_key.public_key(),
                not_before,
                not_after,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
            )
            .add_extension(_ocsp_access(), critical=False)
        )
        if intermediate_marker:
            intermediate_builder = intermediate_builder.add_extension(
                x509.UnrecognizedExtension(INTERMEDIATE_MARKER_OID, b"\x05\x00"), critical=False
            )
        intermediate = intermediate_builder.sign(root_key, hashes.SHA384())
        leaf_key = _key()
        leaf_builder = (
            _builder(
                _name("Fake Prod ECC Mac App Store and iTunes Store Receipt Signing"),
                intermediate.subject,
                leaf_key.public_key(),
                not_before,
                not_after,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(intermediate_key.public_key()),
                critical=False,
            )
            .add_extension(_ocsp_access(), critical=False)
        )
        if leaf_marker:
            leaf_builder = leaf_builder.add_extension(
                x509.UnrecognizedExtension(LEAF_MARKER_OID, b"\x05\x00"), critical=False
            )
        leaf = leaf_builder.sign(intermediate_key, hashes.SHA256())
        return cls(
            root=root_cert,
            root_key=root_key,
            intermediate=intermediate,
            intermediate_key=intermediate_key,
            leaf=leaf,
            leaf_key=leaf_key,
        )

    def x5c(self) -> list[str]:
        return [
            base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()
            for certificate in (self.leaf, self.intermediate, self.root)
        ]

    def issuer_of(self, serial_number: int) -> tuple[x509.Certificate, x509.Certificate, Any] | None:
        """(certificate, its issuer, the issuer's key) for the leaf or intermediate with this serial."""
        if serial_number == self.leaf.serial_number:
            return self.leaf, self.intermediate, self.intermediate_key
        if serial_number == self.intermediate.serial_number:
            return self.intermediate, self.root, self.root_key
        return None


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _ocsp_access() -> x509.AuthorityInformationAccess:
    return x509.AuthorityInformationAccess(
        [x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(OCSP_URL))]
    )


@dataclass
class FakeResponse:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def json(cls, body: Any, status: int = 200) -> FakeResponse:
        return cls(
            status=status, headers={"Content-Type": "application/json"}, body=json.dumps(body).encode()
        )


@dataclass
class SubscriptionStatus:
    """One entry of Get All Subscription Statuses: Apple's status (1 active, 2 expired, 3 billing retry,
    4 billing grace period, 5 revoked) with the latest signed transaction and renewal info."""

    status: int
    signed_transaction: str
    signed_renewal_info: str
    group: str = "21000001"


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    timeout: Any


class FakeAppStore:
    def __init__(
        self, *, bundle_id: str = BUNDLE_ID, app_apple_id: int = APP_APPLE_ID, environment: str = "Production"
    ) -> None:
        self.bundle_id = bundle_id
        self.app_apple_id = app_apple_id
        self.environment = environment  # what the signed data says unless a call names another
        self.chain = CertificateChain.build()
        self._ids = itertools.count(2_000_000_000_000_001)
        # The App Store Server API: its key (App Store Connect issues the .p8), what it serves, and how.
        self.api_key = _key()
        self.api_key_id = "FAKEKEY001"
        self.api_issuer_id = "57246542-96fe-1a63-e053-0824d011072a"
        self.history: list[str] = []  # the customer's signed transactions, oldest first
        self.statuses: list[SubscriptionStatus] = []
        self.page_size = 20
        self.api_status: int = HTTPStatus.OK  # an error status (503, 429...) plays an outage
        # OCSP: an error status plays an outage; serials listed here are answered REVOKED.
        self.ocsp_status: int = HTTPStatus.OK
        self.revoked_serials: set[int] = set()
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    # --- Files for settings ---------------------------------------------------------------------------

    def write_root_certificate(self, directory: Path, *, pem: bool = True) -> Path:
        """The root, as Apple publishes it (DER) or PEM, for `settings.APPLE_ROOT_CERTIFICATES`."""
        encoding = serialization.Encoding.PEM if pem else serialization.Encoding.DER
        path = Path(directory) / ("FakeAppleRootCA-G3." + ("pem" if pem else "cer"))
        path.write_bytes(self.chain.root.public_bytes(encoding))
        return path

    def write_api_key(self, directory: Path) -> Path:
        """The in-app purchase key as App Store Connect hands it out (`SubscriptionKey_<id>.p8`)."""
        path = Path(directory) / f"SubscriptionKey_{self.api_key_id}.p8"
        path.write_bytes(
            self.api_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return path

    # --- What Apple signs -----------------------------------------------------------------------------

    def sign(self, claims: dict[str, Any], *, chain: CertificateChain | None = None) -> str:
        """A JWS as Apple makes it, signed by the leaf of `chain` (this store's by default)."""
        chain = chain or self.chain
        return jwt.encode(claims, chain.leaf_key, algorithm="ES256", headers={"x5c": chain.x5c()})

    def new_transaction_id(self) -> str:
        return str(next(self._ids))

    def transaction_claims(self, **claims: Any) -> dict[str, Any]:
        """A JWSTransactionDecodedPayload of a consumable bought just now; `claims` override or add."""
        now = now_ms()
        transaction_id = claims.get("transactionId") or self.new_transaction_id()
        payload: dict[str, Any] = {
            "transactionId": transaction_id,
            "originalTransactionId": transaction_id,
            "bundleId": self.bundle_id,
            "productId": "credits_100",
            "purchaseDate": now,
            "originalPurchaseDate": now,
            "quantity": 1,
            "type": CONSUMABLE,
            "inAppOwnershipType": "PURCHASED",
            "signedDate": now,
            "environment": self.environment,
            "transactionReason": "PURCHASE",
            "storefront": "USA",
            "storefrontId": "143441",
            "price": 4990,
            "currency": "USD",
        }
        if claims.get("type") == SUBSCRIPTION:
            payload.update(
                productId="plan_monthly",
                subscriptionGroupIdentifier="21000001",
                webOrderLineItemId=str(int(transaction_id) + 1_000_000),
                expiresDate=now + 30 * DAY_MS,
            )
        payload.update(claims)
        return payload

    def signed_transaction(self, *, chain: CertificateChain | None = None, **claims: Any) -> str:
        return self.sign(self.transaction_claims(**claims), chain=chain)

    def renewal_claims(self, **claims: Any) -> dict[str, Any]:
        """A JWSRenewalInfoDecodedPayload of a monthly plan that renews; `claims` override or add."""
        now = now_ms()
        payload: dict[str, Any] = {
            "originalTransactionId": claims.get("originalTransactionId") or self.new_transaction_id(),
            "autoRenewProductId": "plan_monthly",
            "productId": "plan_monthly",
            "autoRenewStatus": 1,
            "signedDate": now,
            "environment": self.environment,
            "recentSubscriptionStartDate": now,
            "renewalDate": now + 30 * DAY_MS,
        }
        payload.update(claims)
        return payload

    def signed_renewal_info(self, *, chain: CertificateChain | None = None, **claims: Any) -> str:
        return self.sign(self.renewal_claims(**claims), chain=chain)

    def signed_notification(
        self,
        notification_type: str,
        subtype: str | None = None,
        *,
        transaction: str | dict[str, Any] | None = None,
        renewal: str | dict[str, Any] | None = None,
        environment: str | None = None,
        bundle_id: str | None = None,
        app_apple_id: int | None = None,
        summary: dict[str, Any] | None = None,
        chain: CertificateChain | None = None,
        **claims: Any,
    ) -> str:
        """A ResponseBodyV2DecodedPayload's signedPayload. `transaction` and `renewal` are signed data
        (used as given) or claims (signed here, in the notification's environment, the renewal info for the
        transaction's subscription unless the claims say otherwise). With `summary` the
        notification carries that summary instead of `data` (RENEWAL_EXTENSION). `claims` override or
        add top-level fields (`notificationUUID`, `signedDate`...)."""
        environment = environment or self.environment
        app = {
            "bundleId": bundle_id or self.bundle_id,
            "appAppleId": app_apple_id or self.app_apple_id,
            "environment": environment,
        }
        payload: dict[str, Any] = {
            "notificationType": notification_type,
            "notificationUUID": str(uuid.uuid4()),
            "version": "2.0",
            "signedDate": now_ms(),
        }
        if subtype:
            payload["subtype"] = subtype
        if summary is not None:
            payload["summary"] = {**app, **summary}
        else:
            data: dict[str, Any] = {**app, "bundleVersion": "42"}
            if isinstance(transaction, dict):
                transaction = self.signed_transaction(
                    chain=chain, **{"environment": environment, **transaction}
                )
            if transaction is not None:
                data["signedTransactionInfo"] = transaction
            if isinstance(renewal, dict):
                # The renewal info of the notification's own subscription, unless the test says otherwise.
                defaults = {"environment": environment}
                if transaction is not None:
                    transaction_claims = _claims_of(transaction)
                    defaults.update(
                        originalTransactionId=transaction_claims.get("originalTransactionId"),
                        productId=transaction_claims.get("productId"),
                        autoRenewProductId=transaction_claims.get("productId"),
                    )
                renewal = self.signed_renewal_info(chain=chain, **{**defaults, **renewal})
            if renewal is not None:
                data["signedRenewalInfo"] = renewal
            payload["data"] = data
        payload.update(claims)
        return self.sign(payload, chain=chain)

    @staticmethod
    def forged(signed: str, **changes: Any) -> str:
        """`signed` with its payload changed after signing (the signature no longer matches)."""
        header, payload, signature = signed.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims.update(changes)
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        return f"{header}.{forged}.{signature}"

    # --- The network edge -----------------------------------------------------------------------------

    def install(self, monkeypatch: Any) -> None:
        """Replaces the bottom of `requests` for the test (monkeypatch undoes it)."""
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
                fake.calls.append(Call(request.method or "", request.url or "", timeout))
            response = fake._answer(request)
            raw = urllib3.HTTPResponse(
                body=io.BytesIO(response.body),
                headers={"Content-Length": str(len(response.body)), **response.headers},
                status=response.status,
                reason=HTTPStatus(response.status).phrase,
                preload_content=False,
                decode_content=False,
                request_method=request.method,
                request_url=request.url,
            )
            return adapter.build_response(request, raw)

        monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)

    def calls_to(self, fragment: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if fragment in call.url]

    def _answer(self, request: requests.PreparedRequest) -> FakeResponse:
        url = urllib.parse.urlsplit(request.url or "")
        if request.method == "POST" and request.url == OCSP_URL:
            return self._serve_ocsp(request)
        environment = API_HOSTS.get(url.hostname or "")
        if request.method == "GET" and url.scheme == "https" and environment is not None:
            if self.api_status != HTTPStatus.OK:
                return FakeResponse.json(
                    {"errorCode": 5000001, "errorMessage": "An unknown error occurred. Please try again."},
                    status=self.api_status,
                )
            if not self._authorized(request):
                return FakeResponse(status=401)  # Apple answers an empty 401
            query = dict(urllib.parse.parse_qsl(url.query))
            if match := re.fullmatch(r"/inApps/v2/history/([0-9]+)", url.path):
                return self._serve_history(environment, match.group(1), query.get("revision"))
            if match := re.fullmatch(r"/inApps/v1/subscriptions/([0-9]+)", url.path):
                return self._serve_statuses(environment, match.group(1))
        raise requests.ConnectionError(
            f"no network in tests: {request.method} {request.url}", request=request
        )

    # --- OCSP -----------------------------------------------------------------------------------------

    def _serve_ocsp(self, request: requests.PreparedRequest) -> FakeResponse:
        """What Apple's OCSP responder answers: the status of one certificate, signed by its issuer."""
        if self.ocsp_status != HTTPStatus.OK:
            return FakeResponse(status=self.ocsp_status)
        asked = ocsp.load_der_ocsp_request(request.body if isinstance(request.body, bytes) else b"")
        found = self.chain.issuer_of(asked.serial_number)
        if found is None:
            return FakeResponse(
                headers={"Content-Type": "application/ocsp-response"},
                body=ocsp.OCSPResponseBuilder.build_unsuccessful(
                    ocsp.OCSPResponseStatus.UNAUTHORIZED
                ).public_bytes(serialization.Encoding.DER),
            )
        certificate, issuer, issuer_key = found
        now = dt.datetime.now(dt.UTC)
        revoked = certificate.serial_number in self.revoked_serials
        answer = (
            ocsp.OCSPResponseBuilder()
            .add_response(
                cert=certificate,
                issuer=issuer,
                algorithm=hashes.SHA256(),
                cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
                this_update=now - dt.timedelta(minutes=1),
                next_update=now + dt.timedelta(hours=12),
                revocation_time=now - dt.timedelta(hours=1) if revoked else None,
                revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
            .sign(issuer_key, hashes.SHA256())
        )
        return FakeResponse(
            headers={"Content-Type": "application/ocsp-response"},
            body=answer.public_bytes(serialization.Encoding.DER),
        )

    # --- App Store Server API -------------------------------------------------------------------------

    def _authorized(self, request: requests.PreparedRequest) -> bool:
        """Apple's check of the API token: ES256 by our key id, issuer, audience, bundle id, unexpired."""
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("Bearer "):
            return False
        token = authorization.removeprefix("Bearer ")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self.api_key.public_key(),
                algorithms=["ES256"],
                audience=API_AUDIENCE,
                issuer=self.api_issuer_id,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError:
            return False
        return header.get("kid") == self.api_key_id and claims.get("bid") == self.bundle_id

    def _customer(self, environment: str, transaction_id: str) -> list[dict[str, Any]] | None:
        """The customer's transactions in `environment` (claims, in order), if `transaction_id` is theirs."""
        transactions = [
            claims
            for claims in map(_claims_of, self.history + [s.signed_transaction for s in self.statuses])
            if claims.get("environment") == environment
        ]
        known = {
            claims.get(key) for claims in transactions for key in ("transactionId", "originalTransactionId")
        }
        return transactions if transaction_id in known else None

    def _not_found(self) -> FakeResponse:
        return FakeResponse.json(
            {"errorCode": 4040010, "errorMessage": "Transaction id not found."}, status=HTTPStatus.NOT_FOUND
        )

    def _serve_history(self, environment: str, transaction_id: str, revision: str | None) -> FakeResponse:
        if self._customer(environment, transaction_id) is None:
            return self._not_found()
        signed = [s for s in self.history if _claims_of(s).get("environment") == environment]
        start = int(revision) if revision else 0
        page = signed[start : start + self.page_size]
        return FakeResponse.json(
            {
                "revision": str(start + len(page)),
                "hasMore": start + len(page) < len(signed),
                "bundleId": self.bundle_id,
                "appAppleId": self.app_apple_id,
                "environment": environment,
                "signedTransactions": page,
            }
        )

    def _serve_statuses(self, environment: str, transaction_id: str) -> FakeResponse:
        if self._customer(environment, transaction_id) is None:
            return self._not_found()
        groups: dict[str, list[dict[str, Any]]] = {}
        for status in self.statuses:
            if _claims_of(status.signed_transaction).get("environment") != environment:
                continue
            groups.setdefault(status.group, []).append(
                {
                    "status": status.status,
                    "originalTransactionId": _claims_of(status.signed_transaction)["originalTransactionId"],
                    "signedTransactionInfo": status.signed_transaction,
                    "signedRenewalInfo": status.signed_renewal_info,
                }
            )
        return FakeResponse.json(
            {
                "environment": environment,
                "bundleId": self.bundle_id,
                "appAppleId": self.app_apple_id,
                "data": [
                    {"subscriptionGroupIdentifier": group, "lastTransactions": items}
                    for group, items in groups.items()
                ],
            }
        )


def _claims_of(signed: str) -> dict[str, Any]:
    return jwt.decode(signed, options={"verify_signature": False})
