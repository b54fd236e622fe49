"""The real stack for end-to-end generation tests: the GPU lanes (in a thread or as `python -m
gpu_worker`), a backend worker process, and a client of the live server (HTTP + websocket).

The GPU lanes in a thread use their own RedisBroker on the test Redis (the namespace the backend uses),
so the GPU actor is never declared on the backend's broker: exactly the split of production.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dramatiq
import numpy as np
from django.conf import settings
from django.db import connection

from gpu_worker.content_credentials import ContentCredentials, make_signing_material
from tests.fixtures.api import PASSWORD, SIGN_UP
from tests.fixtures.live import WSClient, http_graphql
from tests.fixtures.uploads import REQUEST_UPLOADS, send_file
from tests.graphql.generations.helpers import CANCEL, CREATE, SUBSCRIBE, key, selfie_bytes

ROOT = Path(__file__).resolve().parents[3]
# The GPU workers of these tests label videos with a chain made for the run; `read_label(path,
# trust_anchors_pem=C2PA_CHAIN.root_pem)` verifies what the app downloads.
C2PA_CHAIN = make_signing_material(organization="Diffuse tests")

REGISTER_DEVICE = """
mutation ($token: String!) {
  registerDevice(input: {token: $token, platform: IOS, appVersion: "2.0", locale: "en"}) { __typename }
}
"""


def gpu_storage():
    """The GPU worker's view of the storage the test configured (local folder or moto's S3)."""
    from gpu_worker.storage import storage_from_env

    return storage_from_env(
        {
            "STORAGE_BACKEND": settings.STORAGE_BACKEND,
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "S3_BUCKET": settings.S3_BUCKET,
            "S3_ENDPOINT_URL": settings.S3_ENDPOINT_URL or "",
            "S3_REGION": settings.S3_REGION,
        }
    )


class GpuLanes:
    """`gpu_worker.actors` consuming the GPU lanes in this process, on its own RedisBroker."""

    def __init__(self, *, model_root: Path | None = None, **broker_options: Any) -> None:
        from dramatiq.brokers.redis import RedisBroker

        self.model_root = model_root or Path(tempfile.gettempdir()) / "no-models"  # tiny-wan needs none
        self.broker = RedisBroker(url=os.environ["REDIS_URL"], **broker_options)
        self.broker.emit_after("process_boot")
        self.worker: dramatiq.Worker | None = None

    def start(self, *, progress_interval: float = 0.02) -> GpuLanes:
        from gpu_worker.actors import broker_sink, build_worker, redis_cancel_checker
        from gpu_worker.runner import Runner

        runner = Runner(
            storage=gpu_storage(),
            sink=broker_sink(self.broker),
            cancel_checker=redis_cancel_checker(self.broker.client),
            model_root=self.model_root,
            device="cpu",
            progress_interval=progress_interval,
            content_credentials=ContentCredentials(C2PA_CHAIN.material, producer="Diffuse"),
        )
        self.worker = build_worker(self.broker, runner, threads=1, time_limit_s=300)
        self.worker.start()
        return self

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop(timeout=30_000)
            self.worker = None
        self.broker.close()


class Process:
    """A subprocess of this repository with the test's database, Redis and storage settings."""

    def __init__(self, command: list[str], log_path: Path, **extra_env: str) -> None:
        database_url = urlsplit(os.environ["DATABASE_URL"])._replace(
            path="/" + connection.settings_dict["NAME"]
        )
        env = {
            **os.environ,
            "DATABASE_URL": database_url.geturl(),
            "REDIS_URL": os.environ["REDIS_URL"],
            "DJANGO_SETTINGS_MODULE": "backend.settings",
            "STORAGE_BACKEND": settings.STORAGE_BACKEND,
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "S3_BUCKET": settings.S3_BUCKET,
            "S3_ENDPOINT_URL": settings.S3_ENDPOINT_URL or "",
            "S3_REGION": settings.S3_REGION,
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            **extra_env,
        }
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 30) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.alive():
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            self._log.close()


def gpu_worker_process(log_path: Path) -> Process:
    cert, key = log_path.parent / "c2pa-chain.pem", log_path.parent / "c2pa-key.pem"
    cert.write_bytes(C2PA_CHAIN.material.cert_chain_pem)
    key.write_bytes(C2PA_CHAIN.material.private_key_pem)
    return Process(
        [sys.executable, "-m", "gpu_worker"],
        log_path,
        MODEL_ROOT=str(log_path.parent / "models"),
        GPU_DEVICE="cpu",
        GPU_PROGRESS_INTERVAL_S="0.02",
        C2PA_SIGN_CERT=str(cert),
        C2PA_SIGN_KEY=str(key),
    )


def backend_worker_process(log_path: Path) -> Process:
    return Process([sys.executable, "-m", "backend.worker"], log_path, DRAMATIQ_WORKER_THREADS="2")


class LiveUser:
    """A user of the live server: GraphQL over real HTTP, uploads with real HTTP."""

    def __init__(self, server) -> None:
        self.server = server
        email = f"u{uuid.uuid4().hex[:10]}@example.com"
        signed_up = http_graphql(server.url, SIGN_UP, {"email": email, "password": PASSWORD})
        payload = signed_up["data"]["signUp"]
        assert payload["__typename"] == "AuthPayload", payload
        self.token = payload["accessToken"]
        self.email = email

    @property
    def user(self):
        from apps.accounts.models import User

        return User.objects.get(email=self.email)

    def gql(self, query: str, variables: dict | None = None) -> dict:
        return http_graphql(self.server.url, query, variables, token=self.token)

    def register_device(self, token: str = "phone-token") -> None:
        assert (
            self.gql(REGISTER_DEVICE, {"token": token})["data"]["registerDevice"]["__typename"]
            == "DevicePayload"
        )

    def upload_selfie(self, data: bytes | None = None) -> str:
        """Requests an upload and sends the photo (not completed: createGeneration checks it)."""
        result = self.gql(REQUEST_UPLOADS, {"count": 1, "contentType": "image/jpeg"})["data"][
            "requestUploads"
        ]
        target = result["uploads"][0]
        response = send_file(target, data or selfie_bytes())
        assert response.status_code == 204, response.text
        return target["uploadId"]

    def create(self, **fields: Any) -> dict:
        fields.setdefault("idempotencyKey", key())
        result = self.gql(CREATE, {"input": fields})["data"]["createGeneration"]
        assert result["__typename"] == "GenerationPayload", result
        return result["generation"]

    def cancel(self, generation_id: str) -> dict:
        return self.gql(CANCEL, {"id": generation_id})["data"]["cancelGeneration"]

    def socket(self) -> WSClient:
        client = WSClient(self.server.ws_url)
        assert client.init(self.token)["type"] == "connection_ack"
        return client


def subscribe(client: WSClient, op_id: str, generation_id: str) -> dict:
    """Subscribes and returns the first event (the current state)."""
    client.subscribe(op_id, SUBSCRIBE, {"id": generation_id})
    message = client.next_for(op_id, timeout=20)
    assert message["type"] == "next" and "errors" not in message["payload"], message
    return message["payload"]["data"]["generationUpdated"]


def events_until_complete(client: WSClient, op_id: str, *, timeout: float = 120, on_event=None) -> list[dict]:
    """Every event of a subscription until the server completes it."""
    deadline = time.monotonic() + timeout
    events = []
    while True:
        message = client.next_for(op_id, timeout=max(deadline - time.monotonic(), 0.1))
        if message["type"] == "complete":
            return events
        assert message["type"] == "next" and "errors" not in message["payload"], message
        event = message["payload"]["data"]["generationUpdated"]
        events.append(event)
        if on_event is not None:
            on_event(event)


def decode_mp4(data: bytes) -> np.ndarray:
    """Frames (F, H, W, 3) of an MP4, decoded by the bundled ffmpeg (independent of gpu_worker.video)."""
    import imageio_ffmpeg

    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        handle.write(data)
        handle.flush()
        reader = imageio_ffmpeg.read_frames(handle.name)
        meta = next(reader)
        width, height = meta["size"]
        frames = [np.frombuffer(raw, np.uint8).reshape(height, width, 3) for raw in reader]
    return np.stack(frames)


def ffmpeg_stream_line(data: bytes) -> str:
    import imageio_ffmpeg

    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        handle.write(data)
        handle.flush()
        result = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", handle.name],
            capture_output=True,
            text=True,
        )
    return next(line.strip() for line in result.stderr.splitlines() if "Video:" in line)
