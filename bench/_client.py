"""A lean HTTP/1.1 load generator for the benchmarks: keep-alive connections on asyncio streams that send
pre-encoded requests and read each response by its Content-Length. On a 2-core machine the load generator
shares the cores with the server; httpx spends about 1.6 ms of CPU per request, this about a tenth of it,
which leaves the server the CPU it would have behind a real load balancer. It speaks just enough HTTP for
our own server's answers (Content-Length or chunked bodies without trailers); anything else is an error."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit


class Response:
    __slots__ = ("status_code", "content")

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code, self.content = status_code, content

    def json(self):
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


def encode_request(
    method: str, url: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[str, int, bytes]:
    """(host, port, the request's bytes) for `url`, with Host, Content-Length and keep-alive."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return parts.hostname, parts.port or 80, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive connection, one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> Response:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].split(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked = None, False
        for line in header_lines:
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"transfer-encoding":
                chunked = value.strip().lower() == b"chunked"
        if chunked:
            return Response(status, await self._chunks())
        if length is None:
            raise RuntimeError(f"a response without Content-Length or chunks: {head[:200]!r}")
        return Response(status, await self.reader.readexactly(length))

    async def _chunks(self) -> bytes:
        body = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # no trailers from our server: the last CRLF
                return bytes(body)
            body += await self.reader.readexactly(size)
            await self.reader.readexactly(2)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def sender(method: str, url: str, headers: dict[str, str] | None = None, body: bytes = b"", shared=None):
    """A factory of (send, close) for one task of `drive`: a lean keep-alive connection of its own, or,
    given `shared` (an httpx.AsyncClient: BENCH_CLIENT=httpx), requests through that shared client."""
    if shared is not None:
        return lambda: (lambda: shared.request(method, url, headers=headers, content=body), lambda: None)
    host, port, raw = encode_request(method, url, headers, body)

    def connect():
        connection = Connection(host, port)
        return (lambda: connection.send(raw)), connection.close

    return connect


def json_post(url: str, payload: dict, headers: dict[str, str] | None = None) -> tuple[str, int, bytes]:
    body = json.dumps(payload).encode()
    return encode_request("POST", url, {"Content-Type": "application/json", **(headers or {})}, body)


async def drive(sender, seconds: float, concurrency: int) -> tuple[list[float], float]:
    """`concurrency` tasks, each with its own `sender()` -> (send, close), send requests one after another
    for `seconds`; returns every request's latency and the time it took. A status other than 200 stops it."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        send, close = sender()
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await send()
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
        finally:
            close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started
