"""Requests this server makes to a URL a client chose (webhook endpoints, images by URL), kept off its own
networks (SSRF).

- `public_addresses` resolves a URL's host once and refuses it unless every address is public: private,
  link-local, multicast, reserved and unspecified addresses never pass, loopback only where the caller's
  development setting allows it (tests).
- `fetch` GETs a URL (`send` POSTs to one) through a connection to the address that was checked, not
  to a second lookup, so a name that resolves to a public address for the check and to 127.0.0.1 for the
  connection (DNS rebinding) gets nowhere. TLS still verifies the certificate against the host name
  (SNI). `fetch` follows a few redirects, each target checked the same way, and reads the body within a
  size limit and one deadline for the whole exchange, so a slow-drip server cannot hold a thread.

No well-kept library does this today (`advocate`, the requests wrapper, has had no release since 2020 and
predates urllib3 2), so it is urllib3's pool pointed at the checked address, which is all it takes.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3

REDIRECTS = (301, 302, 303, 307, 308)
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundRefused(Exception):
    """The URL may not be called, could not be reached, or answered something unusable; `message`
    says which, in words a client can act on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OutboundTimeout(OutboundRefused):
    pass


@dataclass(frozen=True)
class Fetched:
    url: str  # after redirects
    content_type: str  # the media type, lower case, without parameters
    body: bytes


def address_allowed(address: Address, *, allow_loopback: bool) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return allow_loopback
    return address.is_global and not address.is_multicast


def public_addresses(url: str, *, allow_loopback: bool, schemes: tuple[str, ...]) -> list[Address]:
    """The addresses `url`'s host resolves to, once; OutboundRefused unless the scheme is one of `schemes`
    and every address is public (loopback with `allow_loopback`)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise OutboundRefused("This is not a URL.") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise OutboundRefused(f"Use an {' or '.join(schemes)} URL with a host name.")
    try:
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise OutboundRefused(f"The host {parts.hostname} does not resolve.") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        if not address_allowed(address, allow_loopback=allow_loopback):
            raise OutboundRefused(
                f"{parts.hostname} points to a private, loopback or link-local address ({address}); "
                "requests go to public addresses only."
            )
    return addresses


def _exchange(
    method: str,
    url: str,
    *,
    address: Address,
    deadline: float,
    headers: dict[str, str],
    body: bytes | None = None,
    max_bytes: int = 0,
) -> tuple[int, str, str, bytes]:
    """(status, Location, Content-Type, body) of one request sent to `address` for `url`'s host; the body
    of a 200 is read up to `max_bytes` (none with 0)."""
    parts = urlsplit(url)
    remaining = max(deadline - time.monotonic(), 0.1)
    options: dict = {
        "host": str(address),
        "port": parts.port or (443 if parts.scheme == "https" else 80),
        "timeout": urllib3.Timeout(connect=min(remaining, 5.0), read=remaining),
        "retries": False,
        "maxsize": 1,
    }
    if parts.scheme == "https":
        pool_class = urllib3.HTTPSConnectionPool
        options.update(
            server_hostname=parts.hostname,
            assert_hostname=parts.hostname,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
        )
    else:
        pool_class = urllib3.HTTPConnectionPool
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    too_large = OutboundRefused(f"The file is larger than {max_bytes // (1024 * 1024)} MB.")
    with pool_class(**options) as pool:
        response = pool.urlopen(
            method,
            target,
            body=body,
            headers={"Host": parts.netloc.rpartition("@")[2], **headers},
            redirect=False,
            preload_content=False,
        )
        try:
            received = bytearray()
            if response.status == 200 and max_bytes:
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise too_large
                for chunk in response.stream(64 * 1024):
                    received += chunk
                    if len(received) > max_bytes:
                        raise too_large
                    if time.monotonic() > deadline:
                        raise OutboundTimeout("The server took too long to send the file.")
            return (
                response.status,
                response.headers.get("Location", ""),
                response.headers.get("Content-Type", ""),
                bytes(received),
            )
        finally:
            response.release_conn()


def _checked_exchange(method: str, url: str, *, allow_loopback: bool, schemes, **options):
    addresses = public_addresses(url, allow_loopback=allow_loopback, schemes=schemes)
    try:
        return _exchange(method, url, address=addresses[0], **options)
    except urllib3.exceptions.TimeoutError:
        raise OutboundTimeout("The server took too long to answer.") from None
    except urllib3.exceptions.HTTPError as exc:
        raise OutboundRefused(f"The server could not be reached ({type(exc).__name__}).") from None


def send(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    allow_loopback: bool,
    schemes: tuple[str, ...] = ("https", "http"),
    timeout: float,
) -> tuple[int, str]:
    """POSTs `body` to `url` (SSRF-safe, above) within `timeout` seconds; (status, Location). A redirect
    is answered, never followed."""
    status, location, _, _ = _checked_exchange(
        "POST",
        url,
        allow_loopback=allow_loopback,
        schemes=schemes,
        deadline=time.monotonic() + timeout,
        headers=headers,
        body=body,
    )
    return status, location


def fetch(
    url: str,
    *,
    allow_loopback: bool,
    schemes: tuple[str, ...] = ("https", "http"),
    timeout: float,
    max_bytes: int,
    max_redirects: int = 3,
    accept: str = "*/*",
) -> Fetched:
    """GETs `url` (SSRF-safe, above) within `timeout` seconds in all and `max_bytes`; OutboundRefused
    unless it ends in a 200."""
    deadline = time.monotonic() + timeout
    headers = {"Accept": accept, "User-Agent": "diffuse-fetch/1", "Accept-Encoding": "identity"}
    for _ in range(max_redirects + 1):
        status, location, content_type, body = _checked_exchange(
            "GET",
            url,
            allow_loopback=allow_loopback,
            schemes=schemes,
            deadline=deadline,
            headers=headers,
            max_bytes=max_bytes,
        )
        if status in REDIRECTS and location:
            url = urljoin(url, location)
            continue
        if status != 200:
            raise OutboundRefused(f"The server answered HTTP {status}.")
        return Fetched(url=url, content_type=content_type.split(";")[0].strip().lower(), body=body)
    raise OutboundRefused(f"The URL redirects more than {max_redirects} times.")
