"""Fixtures for the GPU worker: the real tiny-wan route on the CPU, a local storage folder, an event
list, cancel flags in memory, inputs (a selfie, a LoRA) and tiny saved checkpoints of the real families.

Nothing here imports Django; the root conftest's autouse fixtures still run around each test.
"""

from __future__ import annotations

import io
import os
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gpu_worker.contract import GenerationJob, JobEvent, RouteSpec  # noqa: E402
from gpu_worker.storage import LocalStorage  # noqa: E402


def tiny_route(**overrides: Any) -> RouteSpec:
    fields = {
        "name": "tiny-wan",
        "family": "tiny-wan",
        "checkpoint": "",
        "width": 64,
        "height": 64,
        "fps": 8,
        "frames": 17,
        "steps": 3,
        "guidance": 5.0,
        "image_conditioning": True,
        "lora_support": True,
    }
    return RouteSpec(**{**fields, **overrides})


def make_job(route: RouteSpec | None = None, **overrides: Any) -> GenerationJob:
    job_id = overrides.pop("job_id", None) or f"gen-{uuid.uuid4().hex[:12]}"
    fields = {
        "job_id": job_id,
        "route": route or tiny_route(),
        "prompt": "a woman smiling at the camera, golden hour, cinematic dolly in",
        "negative_prompt": "blurry, low quality",
        "seed": 7,
        "aspect_ratio": "1:1",
        "width": 32,
        "height": 32,
        "num_frames": 9,
        "output_prefix": f"generations/{job_id}/a1",
    }
    return GenerationJob(**{**fields, **overrides})


class CancelFlags:
    """The in-memory stand-in for the Redis cancel keys."""

    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.checks = 0

    def set(self, job_id: str) -> None:
        self.flags.add(job_id)

    def __call__(self, job_id: str) -> bool:
        self.checks += 1
        return job_id in self.flags


class EventLog:
    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self.listeners: list[Callable[[JobEvent], None]] = []
        self.lock = threading.Lock()

    def __call__(self, event: JobEvent) -> None:
        # What the backend receives: the message form, read back through the contract.
        with self.lock:
            self.events.append(JobEvent.from_message(event.to_message()))
        for listener in self.listeners:
            listener(event)

    def of(self, job_id: str) -> list[JobEvent]:
        return [event for event in self.events if event.job_id == job_id]


@pytest.fixture
def storage(tmp_path) -> LocalStorage:
    return LocalStorage(tmp_path / "media")


@pytest.fixture
def event_log() -> EventLog:
    return EventLog()


@pytest.fixture
def cancel_flags() -> CancelFlags:
    return CancelFlags()


@pytest.fixture
def make_runner(storage, event_log, cancel_flags, tmp_path):
    from gpu_worker.runner import Runner

    def _make(**overrides: Any) -> Runner:
        kwargs = {
            "storage": storage,
            "sink": event_log,
            "cancel_checker": cancel_flags,
            "model_root": tmp_path / "models",
            "device": "cpu",
            "progress_interval": 0.0,
        }
        return Runner(**{**kwargs, **overrides})

    return _make


@pytest.fixture
def runner(make_runner):
    return make_runner()


def image_bytes(width: int, height: int, *, seed: int, fmt: str = "PNG") -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    # A smooth colour field with a bright disc, so crops and resizes keep real content.
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx / width, yy / height, np.full_like(xx, 0.5, dtype=float)], axis=-1)
    disc = ((xx - width * rng.uniform(0.3, 0.7)) ** 2 + (yy - height * 0.4) ** 2) < (
        min(width, height) / 4
    ) ** 2
    base[disc] = rng.uniform(0.6, 1.0, size=3)
    buffer = io.BytesIO()
    Image.fromarray((base * 255).astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def lora_file() -> bytes:
    """A random (non-zero) LoRA for the tiny transformer, saved as diffusers saves a Wan LoRA."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save

    from gpu_worker.pipelines.tiny_wan import build_transformer

    transformer = build_transformer(16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        transformer.add_adapter(
            LoraConfig(
                r=4,
                lora_alpha=4,
                init_lora_weights=False,
                target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            )
        )
    state = get_peft_model_state_dict(transformer)
    return save({f"transformer.{key}": value.contiguous() for key, value in state.items()})


# --- Reading outputs back with tools independent of gpu_worker.video ---------------------------


def ffmpeg_stream_info(path: Path) -> str:
    """The `Stream ... Video:` line that the bundled ffmpeg prints for a file."""
    import imageio_ffmpeg

    result = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True
    )
    lines = [line.strip() for line in result.stderr.splitlines() if "Video:" in line]
    assert lines, result.stderr
    return lines[0]


def top_level_boxes(data: bytes) -> list[str]:
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        boxes.append(data[offset + 4 : offset + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size < 8:
            break
        offset += size
    return boxes


def decoded_frames(path: Path) -> np.ndarray:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    return np.stack([np.frombuffer(raw, np.uint8).reshape(height, width, 3) for raw in reader])


# --- Tiny saved checkpoints of the real families (their loading code runs on them) --------------


@pytest.fixture(scope="session")
def tiny_model_root(tmp_path_factory) -> Path:
    """MODEL_ROOT with `wan22-tiny` (Wan 2.2 TI2V-5B shape: z_dim 48, expand_timesteps) and `ltx-tiny`
    (LTX-Video shape), random weights saved with save_pretrained, as diffusers' own tests size them."""
    import torch
    from diffusers import (
        AutoencoderKLLTXVideo,
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        LTXConditionPipeline,
        LTXVideoTransformer3DModel,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    from gpu_worker.pipelines.tiny_wan import build_tokenizer

    root = tmp_path_factory.mktemp("models")
    tokenizer = build_tokenizer()
    encoder = {
        "vocab_size": len(tokenizer),
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 37,
        "num_layers": 2,
        "num_heads": 4,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        WanPipeline(
            tokenizer=tokenizer,
            text_encoder=UMT5EncoderModel(UMT5Config(**encoder, relative_attention_num_buckets=8)).eval(),
            vae=AutoencoderKLWan(
                base_dim=3,
                z_dim=48,
                in_channels=12,
                out_channels=12,
                is_residual=True,
                patch_size=2,
                latents_mean=[0.0] * 48,
                latents_std=[1.0] * 48,
                dim_mult=[1, 1, 1, 1],
                num_res_blocks=1,
                scale_factor_spatial=16,
                scale_factor_temporal=4,
                temperal_downsample=[False, True, True],
            ),
            transformer=WanTransformer3DModel(
                patch_size=(1, 2, 2),
                num_attention_heads=2,
                attention_head_dim=12,
                in_channels=48,
                out_channels=48,
                text_dim=32,
                freq_dim=256,
                ffn_dim=32,
                num_layers=2,
                cross_attn_norm=True,
                qk_norm="rms_norm_across_heads",
                rope_max_seq_len=32,
            ),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
            transformer_2=None,
            expand_timesteps=True,
        ).save_pretrained(root / "wan22-tiny")
        vae = AutoencoderKLLTXVideo(
            in_channels=3,
            out_channels=3,
            latent_channels=8,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            decoder_inject_noise=(False, False, False, False, False),
            upsample_residual=(False, False, False, False),
            upsample_factor=(1, 1, 1, 1),
            timestep_conditioning=False,
            patch_size=1,
            patch_size_t=1,
            encoder_causal=True,
            decoder_causal=False,
        )
        LTXConditionPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(),
            vae=vae,
            text_encoder=T5EncoderModel(T5Config(**encoder, relative_attention_num_buckets=8)).eval(),
            tokenizer=tokenizer,
            transformer=LTXVideoTransformer3DModel(
                in_channels=8,
                out_channels=8,
                patch_size=1,
                patch_size_t=1,
                num_attention_heads=4,
                attention_head_dim=8,
                cross_attention_dim=32,
                num_layers=1,
                caption_channels=32,
            ),
        ).save_pretrained(root / "ltx-tiny")
    return root


@pytest.fixture
def wait_for() -> Callable[..., None]:
    import time

    def _wait(condition: Callable[[], bool], *, timeout: float = 30, what: str = "the condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.02)

    return _wait
