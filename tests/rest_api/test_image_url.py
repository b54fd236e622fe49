"""A selfie by URL on /v1/generations (and batch items): fetched by the server from public addresses only,
through a connection to the address it checked, kept as the organization's upload and given the selfie
checks; any URL that cannot be used is a 422 naming `image_url`, and nothing is charged."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from apps.core.outbound import OutboundRefused, fetch
from apps.generations.models import Generation
from apps.storage.backends import get_storage
from apps.storage.models import Upload, UploadStatus
from tests.fixtures.characters import make_photos

from .test_rest_api import PROMPT, assert_problem, balance

pytestmark = pytest.mark.django_db(transaction=True)

SELFIE = make_photos.portrait_jpeg()


class ImageServer:
    """A real HTTP server on a loopback port in a thread: path -> (status, headers, body), counting hits."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.routes = routes
        self.hits: list[tuple[str, str]] = []  # (path, Host header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.hits.append((self.path, self.headers.get("Host", "")))
                if self.path == "/slow.jpg":
                    time.sleep(3)
                status, headers, body = server.routes.get(self.path, (404, {}, b"not here"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value.replace("{base}", server.base))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                    self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> ImageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


JPEG = {"Content-Type": "image/jpeg"}


@pytest.fixture
def images(rest_settings):
    rest_settings.IMAGE_URL_ALLOW_LOOPBACK = True
    rest_settings.IMAGE_URL_TIMEOUT_SECONDS = 1.5
    rest_settings.UPLOAD_MAX_BYTES = 2 * 1024 * 1024
    routes = {
        "/selfie.jpg": (200, JPEG, SELFIE),
        "/labelled-loosely": (200, {"Content-Type": "image/jpg; charset=binary"}, SELFIE),
        "/moved": (302, {"Location": "/selfie.jpg"}, b""),
        "/to-private": (302, {"Location": "http://10.1.2.3/selfie.jpg"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/page.html": (200, {"Content-Type": "text/html"}, b"<html>a photo page</html>"),
        "/no-face.jpg": (200, JPEG, make_photos.no_face_jpeg()),
        "/not-a-photo.jpg": (200, JPEG, b"hello, not a photo at all"),
        "/big.jpg": (200, JPEG, b"\xff\xd8\xff" + bytes(3 * 1024 * 1024)),
        "/slow.jpg": (200, JPEG, SELFIE),
        "/server-error.jpg": (500, {}, b"oops"),
    }
    with ImageServer(routes) as server:
        yield server


def test_a_selfie_by_url_is_fetched_once_checked_and_used(api, images):
    client = api()
    body = {**PROMPT, "image_url": f"{images.base}/moved"}
    created = client.post("/generations", json=body, headers={"Idempotency-Key": "by-url-1"})
    assert created.status_code == 201, created.text
    generation = Generation.objects.select_related("photo_upload").get(pk=created.json()["id"])
    upload = generation.photo_upload
    assert upload.user_id == client.organization.account_id
    assert upload.status == UploadStatus.VERIFIED and upload.cleaned_at is not None  # the selfie checks ran
    assert generation.image_key == upload.key and get_storage().head(upload.key) is not None
    assert [path for path, _ in images.hits] == ["/moved", "/selfie.jpg"]

    # The same key and body again: the first generation, charged once, and the URL not fetched again.
    again = client.post("/generations", json=body, headers={"Idempotency-Key": "by-url-1"})
    assert again.status_code == 201 and again.json()["id"] == str(generation.pk)
    assert len(images.hits) == 2
    price = generation.quoted_credits
    assert balance(client.organization) == (1000 - price, price)

    # A loosely labelled image (image/jpg) is judged by its bytes; batch items take URLs too.
    batch = client.post(
        "/generations/batch",
        json={
            "items": [
                {**PROMPT, "image_url": f"{images.base}/labelled-loosely"},
                {**PROMPT, "image_url": f"{images.base}/page.html"},
            ]
        },
        headers={"Idempotency-Key": "by-url-batch"},
    )
    assert batch.status_code == 200, batch.text
    first, second = batch.json()["data"]
    assert first["id"] and first["error"] is None
    assert second["id"] is None
    assert (second["error"]["code"], second["error"]["field"]) == ("VALIDATION", "image_url")
    assert Generation.objects.count() == 2


@pytest.mark.parametrize(
    ("path", "code", "reason"),
    [
        ("/page.html", "VALIDATION", None),  # not an image
        ("/missing.jpg", "VALIDATION", None),  # 404
        ("/server-error.jpg", "VALIDATION", None),
        ("/to-private", "VALIDATION", None),  # a redirect to a private address is not followed
        ("/loop", "VALIDATION", None),  # too many redirects
        ("/big.jpg", "VALIDATION", None),  # over UPLOAD_MAX_BYTES
        ("/slow.jpg", "VALIDATION", None),  # past IMAGE_URL_TIMEOUT_SECONDS
        ("/not-a-photo.jpg", "UPLOAD_INVALID", "UNSUPPORTED_TYPE"),
        ("/no-face.jpg", "UPLOAD_INVALID", "NO_FACE"),  # the selfie checks of createGeneration
    ],
)
def test_an_unusable_image_url_is_a_422_naming_it_and_charges_nothing(api, images, path, code, reason):
    client = api()
    response = client.post(
        "/generations", json={**PROMPT, "image_url": images.base + path}, headers={"Idempotency-Key": "u"}
    )
    body = assert_problem(response, 422, code, "image_url")
    assert body.get("reason") == reason
    assert not Generation.objects.exists() and balance(client.organization) == (1000, 0)
    # Only a file that passed the upload checks is kept (and the selfie checks then refuse it).
    kept = list(Upload.objects.values_list("status", flat=True))
    assert kept == ([UploadStatus.REJECTED] if reason == "NO_FACE" else [])


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://10.0.0.8/selfie.jpg",
        "http://[::1]:9/selfie.jpg",  # loopback, when the development setting is off
        "file:///etc/passwd",
        "ftp://93.184.215.14/selfie.jpg",
        "not a url",
        "http://no-such-host.invalid/selfie.jpg",
    ],
)
def test_private_and_malformed_image_urls_are_refused_before_any_request(api, rest_settings, url):
    rest_settings.IMAGE_URL_ALLOW_LOOPBACK = False
    client = api()
    response = client.post(
        "/generations", json={**PROMPT, "image_url": url}, headers={"Idempotency-Key": "u"}
    )
    assert_problem(response, 422, "VALIDATION", "image_url")
    assert not Generation.objects.exists() and not Upload.objects.exists()
    assert balance(client.organization) == (1000, 0)


def test_an_upload_and_an_image_url_together_are_refused(api, images):
    client = api()
    body = {**PROMPT, "image_url": f"{images.base}/selfie.jpg", "photo_upload_id": "whatever"}
    response = client.post("/generations", json=body, headers={"Idempotency-Key": "u"})
    assert_problem(response, 422, "VALIDATION", "image_url")
    assert images.hits == []


def test_the_connection_goes_to_the_address_that_was_checked(images, monkeypatch):
    """DNS rebinding: the name resolves to an allowed address for the check and to another for a second
    lookup; the fetch makes no second lookup and connects to the address it checked."""
    port = images.server.server_address[1]
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding_getaddrinfo(host, *args, **kwargs):
        if host == "photos.example":
            lookups.append(host)
            address = "127.0.0.1" if len(lookups) == 1 else "10.9.9.9"
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    fetched = fetch(
        f"http://photos.example:{port}/selfie.jpg", allow_loopback=True, timeout=5, max_bytes=10**7
    )
    assert fetched.body == SELFIE and fetched.content_type == "image/jpeg"
    assert lookups == ["photos.example"]
    assert images.hits == [("/selfie.jpg", f"photos.example:{port}")]

    lookups.clear()
    with pytest.raises(OutboundRefused):  # and without the development setting, loopback is refused
        fetch(f"http://photos.example:{port}/selfie.jpg", allow_loopback=False, timeout=5, max_bytes=10**7)


def test_a_quote_with_an_image_url_prices_it_without_fetching(api, images):
    client = api()
    quote = client.post("/quotes", json={**PROMPT, "image_url": f"{images.base}/selfie.jpg"})
    assert quote.status_code == 200, quote.text
    assert quote.json()["credits"] > 0 and quote.json()["balance"] == 1000
    assert images.hits == [] and not Upload.objects.exists()


def self_signed(host: str, folder) -> tuple[str, str]:
    """(certificate path, key path) of a certificate for `host` that nothing trusts by default."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


def test_https_checks_the_certificate_against_the_host_name_on_the_pinned_connection(
    images, monkeypatch, tmp_path
):
    import ssl

    import certifi

    cert, key = self_signed("photos.example", tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    images.server.socket = context.wrap_socket(images.server.socket, server_side=True)
    port = images.server.server_address[1]
    real_getaddrinfo = socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        if host == "photos.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))]
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    options = {"allow_loopback": True, "timeout": 5, "max_bytes": 10**7}
    with pytest.raises(OutboundRefused, match="SSLError"):  # not a trusted certificate
        fetch(f"https://photos.example:{port}/selfie.jpg", **options)
    monkeypatch.setattr(certifi, "where", lambda: cert)  # now it is
    assert fetch(f"https://photos.example:{port}/selfie.jpg", **options).body == SELFIE
    with pytest.raises(OutboundRefused, match="SSLError"):  # the same server, under a name not on it
        fetch(f"https://127.0.0.1:{port}/selfie.jpg", **options)
