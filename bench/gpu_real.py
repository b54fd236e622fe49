"""Wan 2.2 TI2V-5B at real size with random weights, through the worker's own Runner and Trainer (CUDA).

    python bench/gpu_real.py --out bench/results/gpu_real --budget-s 540     # on a GPU machine
    .venv/bin/python bench/gpu_real.py --tiny                                 # the same code paths, CPU

1. Builds a checkpoint folder in the diffusers layout from the published configs, with random weights
   drawn on the device (bfloat16; the VAE in float32, as the route loads it): WanTransformer3DModel (30
   layers, 24 heads x 128, ffn 14336, 48 channels in and out, text dim 4096), AutoencoderKLWan (z_dim 48,
   base_dim 160, residual, patch 2, 16x16x4 compression; latent mean 0 and std 1, the published 48
   values do not change a timing) and a UMT5-XXL encoder (d_model 4096, 24 layers, 64 heads x 64, d_ff
   10240, gated-gelu, vocabulary 256384) with a word-level tokenizer (prompts still pad to 512 tokens).
   It goes to /dev/shm when that has room: `load` is then a warm-page-cache load, not a disk read.
2. Runs image-to-video jobs of 1280x704x121 (5 s at 24 fps), guidance 5 (two transformer passes per
   step), through `Runner.run`, the route loaded by `gpu_worker.pipelines.wan22.load` from MODEL_ROOT:
   - `load`: a small first job (the model load, stopped after one step);
   - `baseline`: 50 steps, diffusers' defaults (no speed-up), every stage;
   - speed profiles (gpu_worker/speedups.py), each given to the runner as the route's profile (applied
     and recorded in the job's timings as for a configured route): an attention backend on a few
     steps; the VAE decode settings (`vae decode`: the baseline's latents decoded again in bfloat16,
     with and without cuDNN's benchmark mode; seconds and PSNR against the baseline's float32 decode;
     those faster and above MIN_DECODE_PSNR_DB join the fastest profile); the worker's warm-up
     (`Runner.warm_up`, seconds per shape: the native size in both orientations); the fastest profile
     (compiled blocks + TaylorSeer cache + TF32 + the decode settings) in full, with PSNR against the
     baseline's frames at the same seed; users' LoRAs hot-swapped into its compiled blocks
     (`lora hotswap (compiled)`: load stage, first and steady step, graphs compiled); the same profile
     with the route's float32 decode in full (what the fastest was before the decode settings); then
     compile alone and First-Block caches at two thresholds on a few steps each;
   - a cancel (flag set mid-step, time until `run` returns), a rank-32 LoRA on to_q/to_k/to_v/to_out.0
     on eager blocks (loaded through the runner, hot-swapped in place, unloaded), Soul ID training
     seconds per step at batch 1/4/8 (`Trainer`, 15 photos, 512 px) and a model switch (the route
     evicted and loaded again).
   Jobs measured on a few steps are stopped through the runner's own cancel flag, so they skip the decode.
   `--only vae_decode,fastest,...` restricts what runs after the baseline (GROUPS). `shipped` (only when
   named) runs the Wan route's shipped profile (SHIPPED: compiled blocks, TF32, bfloat16 decoder, no step
   cache) in full before the fastest, which then also gets its PSNR against that cache-free run
   (`psnr_db_vs_shipped`). `--no-baseline` skips the baseline (and what compares with it).
3. Per job: load, text encode (the two `encode_prompt` calls), seconds per step (transformer time: from
   the first pass to the last, synchronised; "steady" leaves out the first step), the rest of the
   denoise call (latents, the selfie's VAE encode), decode, MP4 encode + quality gate, upload (a local
   folder), total, peak allocated and reserved GPU memory. The quality gate is measured but never fails
   a job (random weights make coloured noise; a failure would rerun the job with a new seed).

Random weights time the work, not the picture: a cache's skip decisions and the PSNR between two runs
are those of a random network, not of the real checkpoint. Each measurement is appended to
OUT/gpu_real.jsonl (flushed) and the tables in OUT/gpu_real.md are rewritten after each one, so a run
stopped at its limit keeps what it measured. A measurement whose estimate does not fit in what is left of
`--budget-s` is skipped, and a job still running at the budget's end is stopped through its cancel flag.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import io
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

STARTED = time.monotonic()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from apps.generations.shipped import SHIPPED_ROUTES  # noqa: E402
from gpu_worker import quality, video  # noqa: E402
from gpu_worker.contract import (  # noqa: E402
    CANCELED,
    FAMILY_WAN22,
    TRAINING_DEFAULTS,
    GenerationJob,
    JobEvent,
    RouteSpec,
    TrainingJob,
)
from gpu_worker.pipelines.tiny_wan import wan22_tiny_configs  # noqa: E402
from gpu_worker.runner import Runner  # noqa: E402
from gpu_worker.speedups import SpeedProfile, apply_speedups, reset_speedups  # noqa: E402
from gpu_worker.storage import LocalStorage  # noqa: E402
from gpu_worker.training import Trainer  # noqa: E402

CHECKPOINT = "wan22-ti2v-5b-random"
PROMPT = "a woman smiling at the camera, golden hour, cinematic dolly in, soft light, film grain"
NEGATIVE = "blurry, low quality, distorted, watermark, text"
SEED = 42
TRAINING_PHOTOS = 15
TAYLORSEER = {"cache_interval": 4, "disable_cache_before_step": 4, "max_order": 1, "lite": True}
# The profile the Wan 2.2 route ships with (apps/generations/shipped.py): no step cache
SHIPPED = SpeedProfile.from_dict(
    next(route for route in SHIPPED_ROUTES if route.get("family") == FAMILY_WAN22)["speed_profile"]
)
# What `--only` may name (build and load always run; the baseline too, unless --no-baseline)
GROUPS = (
    "attention",
    "vae_decode",
    "shipped",
    "fastest",
    "hotswap",
    "previous",
    "compile",
    "cancel",
    "training",
    "lora",
    "switch",
    "first_block",
)
# What runs without `--only`: all but `shipped` (one more full clip, asked for by name)
DEFAULT_GROUPS = tuple(name for name in GROUPS if name != "shipped")


# --- Sizes ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Size:
    name: str
    width: int
    height: int
    frames: int
    fps: int
    steps: int  # a full job
    few_steps: int  # a profile measured on a few steps
    small: tuple[int, int, int]  # width, height, frames of the load / switch jobs
    train_resolution: int
    train_steps: int
    lora_rank: int
    compile_options: dict[str, Any]
    guess_step_s: float  # estimates before anything is measured (budget checks)
    guess_decode_s: float
    guess_load_s: float
    guess_compile_s: float
    dtype: torch.dtype


REAL = Size(
    name="real",
    width=1280,
    height=704,
    frames=121,
    fps=24,
    steps=50,
    few_steps=4,
    small=(256, 256, 5),
    train_resolution=512,
    train_steps=8,
    lora_rank=32,
    compile_options={},
    guess_step_s=3.5,
    guess_decode_s=40.0,
    guess_load_s=40.0,
    guess_compile_s=90.0,
    dtype=torch.bfloat16,
)
TINY = Size(
    name="tiny",
    width=32,
    height=32,
    frames=9,
    fps=8,
    steps=4,
    few_steps=3,
    small=(32, 32, 5),
    train_resolution=32,
    train_steps=3,
    lora_rank=4,
    compile_options={"backend": "eager"},  # dynamo without inductor: seconds on a CPU
    guess_step_s=0.05,
    guess_decode_s=0.2,
    guess_load_s=0.5,
    guess_compile_s=5.0,
    dtype=torch.float32,
)


def model_configs(size: Size, vocab_size: int) -> dict[str, dict[str, Any]]:
    if size.name == "real":  # Wan-AI/Wan2.2-TI2V-5B-Diffusers
        return {
            "transformer": dict(
                patch_size=(1, 2, 2),
                num_attention_heads=24,
                attention_head_dim=128,
                in_channels=48,
                out_channels=48,
                text_dim=4096,
                freq_dim=256,
                ffn_dim=14336,
                num_layers=30,
                cross_attn_norm=True,
                qk_norm="rms_norm_across_heads",
                eps=1e-6,
                rope_max_seq_len=1024,
            ),
            "vae": dict(
                base_dim=160,
                decoder_base_dim=256,
                z_dim=48,
                dim_mult=[1, 2, 4, 4],
                num_res_blocks=2,
                attn_scales=[],
                temperal_downsample=[False, True, True],
                is_residual=True,
                in_channels=12,
                out_channels=12,
                patch_size=2,
                scale_factor_spatial=16,
                scale_factor_temporal=4,
                latents_mean=[0.0] * 48,
                latents_std=[1.0] * 48,
            ),
            "text_encoder": dict(
                vocab_size=256384,
                d_model=4096,
                d_kv=64,
                d_ff=10240,
                num_layers=24,
                num_heads=64,
                relative_attention_num_buckets=32,
                relative_attention_max_distance=128,
                feed_forward_proj="gated-gelu",
                dense_act_fn="gelu_new",
                is_gated_act=True,
                tie_word_embeddings=False,
                pad_token_id=0,
                eos_token_id=1,
            ),
        }
    return wan22_tiny_configs(vocab_size)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_checkpoint(folder: Path, size: Size, device: str) -> dict[str, Any]:
    """Random weights drawn on `device`, saved with save_pretrained in the diffusers folder layout."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from gpu_worker.pipelines.tiny_wan import build_tokenizer

    tokenizer = build_tokenizer()
    configs = model_configs(size, len(tokenizer))
    sync = _sync_for(device)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        if device.startswith("cuda"):
            torch.cuda.manual_seed(0)
        with default_dtype(size.dtype):
            transformer = WanTransformer3DModel(**configs["transformer"]).eval()
            text_encoder = UMT5EncoderModel(UMT5Config(**configs["text_encoder"])).eval()
        vae = AutoencoderKLWan(**configs["vae"]).eval()  # float32, as wan22.load loads it
    text_encoder.to(size.dtype)
    sync()
    initialised = time.perf_counter()
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=5.0
        ),
        transformer_2=None,
        expand_timesteps=True,
    )
    pipe.save_pretrained(folder)
    saved = time.perf_counter()
    counts = {
        name: sum(p.numel() for p in module.parameters())
        for name, module in (("transformer", transformer), ("vae", vae), ("text_encoder", text_encoder))
    }
    del pipe, transformer, text_encoder, vae
    _free()
    on_disk = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return {
        "init_s": initialised - started,
        "save_s": saved - initialised,
        "params_billion": {name: round(count / 1e9, 3) for name, count in counts.items()},
        "folder_gb": round(on_disk / 1e9, 2),
    }


# --- Measuring ------------------------------------------------------------------------------------


def _sync_for(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 clips of the same shape (inf when identical), frame by frame in float64."""
    if a.shape != b.shape:
        raise ValueError(f"clips differ in shape: {a.shape} vs {b.shape}")
    squared = sum(
        float(np.square(x.astype(np.float64) - y.astype(np.float64)).sum()) for x, y in zip(a, b, strict=True)
    )
    mse = squared / a.size
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


class Probe:
    """Times a model's transformer passes (forward hooks on the top-level transformer, whose blocks may
    be compiled or cached inside), its `encode_prompt` calls and keeps its decoded frames."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.model: Any = None
        self.handles: list[Any] = []
        self.keep_frames = False
        self.frames: np.ndarray | None = None
        self.reset()

    def reset(self) -> None:
        self.first_pass_start: float | None = None
        self.pass_ends: list[float] = []
        self.text_s = 0.0
        self.frames = None
        self.latents: Any = None

    def attach(self, model: Any) -> None:
        if model is self.model:
            return
        self.detach()
        self.model = model
        for transformer in {id(p.transformer): p.transformer for p in (model.t2v, model.i2v)}.values():
            self.handles.append(transformer.register_forward_pre_hook(self._before_pass))
            self.handles.append(transformer.register_forward_hook(self._after_pass))
        for pipe in (model.t2v, model.i2v):
            pipe.encode_prompt = self._timed_encode(pipe.encode_prompt)
        model.decode = self._keeping_frames(model.decode)

    def detach(self) -> None:
        """Drops the hooks and the reference to the model (so an evicted model can be freed)."""
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.model = None

    def _before_pass(self, module: Any, args: Any) -> None:
        if self.first_pass_start is None:
            self.sync()
            self.first_pass_start = time.perf_counter()

    def _after_pass(self, module: Any, args: Any, output: Any) -> None:
        self.sync()
        self.pass_ends.append(time.perf_counter())

    def _timed_encode(self, encode: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            start = time.perf_counter()
            try:
                return encode(*args, **kwargs)
            finally:
                self.sync()
                self.text_s += time.perf_counter() - start

        return timed

    def _keeping_frames(self, decode: Callable[..., Any]) -> Callable[..., Any]:
        def decoding(pipe: Any, latents: Any, generator: Any, **kwargs: Any) -> Any:
            frames = decode(pipe, latents, generator, **kwargs)
            if self.keep_frames:
                self.frames = video.frames_to_uint8(np.asarray(frames))
                self.latents = latents
            return frames

        return decoding

    def step_figures(self, passes_per_step: int) -> dict[str, Any]:
        ends, start = self.pass_ends, self.first_pass_start
        steps = len(ends) // passes_per_step
        if not steps or start is None:
            return {"steps": 0}
        step_ends = ends[passes_per_step - 1 :: passes_per_step][:steps]
        figures = {
            "steps": steps,
            "transformer_s": step_ends[-1] - start,
            "s_per_step": (step_ends[-1] - start) / steps,
            "first_step_s": step_ends[0] - start,
        }
        if steps > 1:
            figures["steady_s_per_step"] = (step_ends[-1] - step_ends[0]) / (steps - 1)
        return figures


class Recorder:
    """Appends each measurement to OUT/gpu_real.jsonl and rewrites OUT/gpu_real.md, as it goes."""

    def __init__(self, out: Path, budget_s: float, header: str, started: float) -> None:
        self.started = started
        self.out = out
        self.budget_s = budget_s
        self.header = header
        self.results: dict[str, dict[str, Any]] = {}
        out.mkdir(parents=True, exist_ok=True)
        self.jsonl = out / "gpu_real.jsonl"
        self.jsonl.write_text("")
        self.markdown = out / "gpu_real.md"

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()

    def measure(
        self, name: str, estimate_s: float, fn: Callable[[], dict[str, Any]]
    ) -> dict[str, Any] | None:
        if self.remaining() < estimate_s:
            entry = {
                "status": "skipped",
                "reason": f"~{estimate_s:.0f} s needed, {self.remaining():.0f} s left",
            }
            self._record(name, entry)
            return None
        print(f"[{self.elapsed():6.1f} s] {name} (estimate {estimate_s:.0f} s) ...", flush=True)
        started = time.perf_counter()
        try:
            result = fn()
            entry = {"status": "ok", "seconds": round(time.perf_counter() - started, 2), **result}
        except Exception as exc:  # each measurement on its own: record and go on
            entry = {
                "status": "error",
                "seconds": round(time.perf_counter() - started, 2),
                "error": f"{type(exc).__name__}: {exc}"[:500],
                "traceback": traceback.format_exc()[-3000:],
            }
            print(entry["traceback"], file=sys.stderr, flush=True)
            _free()
        self._record(name, entry)
        return entry if entry["status"] == "ok" else None

    def _record(self, name: str, entry: dict[str, Any]) -> None:
        entry = {"measurement": name, "at_s": round(self.elapsed(), 1), **entry}
        self.results[name] = entry
        with self.jsonl.open("a") as handle:
            handle.write(json.dumps(entry, default=_json_default) + "\n")
            handle.flush()
        brief = {k: v for k, v in entry.items() if k not in ("traceback",)}
        print(f"[{self.elapsed():6.1f} s] {json.dumps(brief, default=_json_default)[:1500]}", flush=True)
        self.markdown.write_text(render_markdown(self.header, self.results))


def _json_default(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    return str(value)


# --- The jobs -------------------------------------------------------------------------------------


class LastError(logging.Handler):
    """Keeps the last exception the worker logged (the runner turns one into "internal error")."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.last = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"[:400]


class Bench:
    """The worker's Runner (and Trainer) on the random checkpoint, with the probe and the cancel flags."""

    def __init__(
        self,
        size: Size,
        device: str,
        model_root: Path,
        storage: LocalStorage,
        rec: Recorder,
        errors: LastError,
    ) -> None:
        self.size = size
        self.device = device
        self.storage = storage
        self.rec = rec
        self.sync = _sync_for(device)
        self.probe = Probe(self.sync)
        self.route = RouteSpec(
            name="wan22-ti2v-5b",
            family="wan22",
            checkpoint=CHECKPOINT,
            width=size.width,
            height=size.height,
            fps=size.fps,
            frames=size.frames,
            steps=size.steps,
            guidance=5.0,
            image_conditioning=True,
            lora_support=True,
        )
        self.passes_per_step = 2 if self.route.guidance > 1 else 1
        self.flags: dict[str, float] = {}  # job id -> when its cancel flag was set
        self.stop_after: dict[str, int] = {}  # job id -> steps after which the bench stops it
        self.steps_done: dict[str, int] = {}
        self.step_times: dict[str, list[float]] = {}
        self.on_first_step: dict[str, Callable[[], None]] = {}
        self.gate_results: list[str | None] = []
        self.runner = Runner(
            storage=storage,
            sink=self.on_event,
            model_root=model_root,
            cancel_checker=self.cancel_requested,
            device=device,
            progress_interval=0.0,
            quality_gate=self.quality_gate,
            compile_options=size.compile_options,
            # the route's native size in both orientations (the worker's default; one when square)
            warmup_shapes=list(
                dict.fromkeys(
                    [(size.width, size.height, size.frames), (size.height, size.width, size.frames)]
                )
            ),
        )
        self.trainer = Trainer(self.runner)
        self.errors = errors
        self.counter = 0
        selfie = face_photo(7, 720 if size.name == "real" else 64)
        storage.write("uploads/bench/selfie.png", selfie, content_type="image/png")
        # Estimates for the budget checks, replaced by measured figures as they come.
        self.step_s = size.guess_step_s
        self.decode_s = size.guess_decode_s
        self.load_s = size.guess_load_s
        self.tail_s = size.guess_decode_s / 4  # encode + quality + upload

    # Runner hooks

    def on_event(self, event: JobEvent) -> None:
        if event.kind == "stage" and event.stage == "DENOISING" and self.runner.models:
            self.probe.attach(next(reversed(self.runner.models.values())))
        if event.kind == "progress" and event.stage in ("DENOISING", "TRAINING"):
            done = self.steps_done.get(event.job_id, 0) + 1
            self.steps_done[event.job_id] = done
            self.step_times.setdefault(event.job_id, []).append(time.perf_counter())
            if done == 1 and event.job_id in self.on_first_step:
                self.on_first_step.pop(event.job_id)()

    def cancel_requested(self, job_id: str) -> bool:
        if job_id in self.flags:
            return True
        limit = self.stop_after.get(job_id)
        if limit is not None and self.steps_done.get(job_id, 0) >= limit:
            return True
        return self.rec.remaining() < 0  # the budget is spent: stop within one step

    def quality_gate(self, path: Path, **kwargs: Any) -> quality.QualityReport:
        report = quality.check_video_file(path, **kwargs)
        self.gate_results.append(report.reason)
        return quality.QualityReport(None, "ok", report.metrics)

    # Jobs

    def _job_id(self, label: str) -> str:
        self.counter += 1
        return f"bench-{self.counter}-{label}".replace(" ", "-").replace("+", "-")[:60]

    def generate(
        self,
        label: str,
        *,
        stop_after: int | None = None,
        small: bool = False,
        route: RouteSpec | None = None,
        lora_key: str | None = None,
        keep_frames: bool = False,
        on_first_step: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """One job through `Runner.run`; with `stop_after` the bench cancels it after that many steps."""
        route = route or self.route
        width, height, frames = (
            self.size.small if small else (self.size.width, self.size.height, self.size.frames)
        )
        job = GenerationJob(
            job_id=self._job_id(label),
            route=route,
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
            seed=SEED,
            aspect_ratio="16:9",
            width=width,
            height=height,
            num_frames=frames,
            output_prefix=f"generations/bench/{self.counter}",
            image_key="uploads/bench/selfie.png",
            lora_key=lora_key,
        )
        if stop_after is not None:
            self.stop_after[job.job_id] = stop_after
        if on_first_step is not None:
            self.on_first_step[job.job_id] = lambda: on_first_step(job.job_id)
        self.probe.reset()
        self.probe.keep_frames = keep_frames
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        event = self.runner.run(job)
        returned = time.perf_counter()
        if event.kind != "completed" and event.reason_code != CANCELED:
            raise RuntimeError(
                f"job {job.job_id} failed: {event.reason_code} {event.message} "
                f"({self.errors.last or 'nothing logged'})"
            )
        outcome = "completed"
        if event.kind != "completed":
            planned = (stop_after is not None and self.steps_done.get(job.job_id, 0) >= stop_after) or (
                job.job_id in self.flags
            )
            outcome = "stopped" if planned else "stopped at the budget's end"
        timings = dict(event.timings)
        result: dict[str, Any] = {
            "job": {"width": width, "height": height, "frames": frames, "route_steps": route.steps},
            "outcome": outcome,
            "wall_s": returned - started,
            "returned_at": returned,
            "job_id": job.job_id,
            "timings": timings,
            "text_encode_s": self.probe.text_s,
            **self.probe.step_figures(self.passes_per_step),
        }
        if "denoise" in timings and "transformer_s" in result:
            result["denoise_other_s"] = timings["denoise"] - result["transformer_s"] - self.probe.text_s
        if "encode" in timings:
            result["encode_and_gate_s"] = timings["encode"] + timings.get("quality", 0.0)
            result["quality_gate"] = self.gate_results[-1] or "ok"
        if torch.cuda.is_available():
            result["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
            result["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        self._learn(result)
        return result

    def _learn(self, result: dict[str, Any]) -> None:
        timings = result["timings"]
        if "decode" in timings:
            self.decode_s = timings["decode"]
            self.tail_s = result.get("encode_and_gate_s", 0.0) + timings.get("upload", 0.0)

    def pipe(self) -> Any:
        return self.model().i2v

    def model(self) -> Any:
        return next(reversed(self.runner.models.values()))

    def routed(self, profile: SpeedProfile) -> RouteSpec:
        """The bench's route with `profile` as its speed profile: the runner applies it (with the size's
        compile options) and records it in the job's timings, as for a route configured so."""
        if profile == SpeedProfile():  # no profile at all: the runner touches nothing (diffusers' defaults)
            return self.route
        return dataclasses.replace(self.route, speed_profile=profile.to_dict())

    def full(
        self,
        label: str,
        profile: SpeedProfile,
        *,
        against: np.ndarray | None = None,
        also_against: dict[str, np.ndarray | None] | None = None,
    ) -> dict[str, Any]:
        result = self.generate(label, keep_frames=True, route=self.routed(profile))
        result["profile"] = profile.to_dict()
        result["applied"] = result["timings"].get("speed_profile")
        if "total" in result["timings"]:  # not when the budget stopped it
            result["clip_s"] = result["timings"]["total"] - result["timings"].get("load", 0.0)
        if against is not None and self.probe.frames is not None:
            result["psnr_db"] = psnr(self.probe.frames, against)
        for name, frames in (also_against or {}).items():
            if frames is not None and self.probe.frames is not None:
                result[f"psnr_db_vs_{name}"] = psnr(self.probe.frames, frames)
        return result

    def few(self, label: str, profile: SpeedProfile, steps: int | None = None) -> dict[str, Any]:
        result = self.generate(label, stop_after=steps or self.size.few_steps, route=self.routed(profile))
        result["profile"] = profile.to_dict()
        result["applied"] = result["timings"].get("speed_profile")
        return result

    def estimate_full(self, step_s: float) -> float:
        return self.route.steps * step_s + self.decode_s + self.tail_s + 10


def face_photo(seed: int, size: int) -> bytes:
    """A synthetic face (the one bench/gpu_training.py draws), PNG."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    s = size / 32
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    cx, cy = size / 2 + rng.uniform(-2, 2) * s, size / 2 + rng.uniform(-1, 2) * s
    light = rng.uniform(0.8, 1.15)
    skin = tuple(int(min(255, c * light)) for c in (224, 172, 140))
    draw.ellipse([cx - 9 * s, cy - 12 * s, cx + 9 * s, cy + 12 * s], fill=skin)
    draw.pieslice([cx - 10 * s, cy - 14 * s, cx + 10 * s, cy], 180, 360, fill=(60, 40, 25))
    for side in (-1, 1):
        ex, ey = cx + side * 4 * s, cy - 2 * s
        draw.ellipse([ex - 1.5 * s, ey - s, ex + 1.5 * s, ey + s], fill=(30, 30, 40))
    draw.arc([cx - 4 * s, cy + 3 * s, cx + 4 * s, cy + 8 * s], 20, 160, fill=(150, 60, 60))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def random_lora(transformer: Any, rank: int, seed: int) -> bytes:
    """A rank-`rank` LoRA on every block's to_q/to_k/to_v/to_out.0 (attn1 and attn2), in diffusers' keys."""
    from safetensors.torch import save

    generator = torch.Generator("cpu").manual_seed(seed)
    state = {}
    for name, module in transformer.named_modules():
        if not (name.startswith("blocks.") and isinstance(module, torch.nn.Linear)):
            continue
        if not name.endswith((".to_q", ".to_k", ".to_v", ".to_out.0")):
            continue
        a = torch.randn(rank, module.in_features, generator=generator) / math.sqrt(module.in_features)
        b = torch.randn(module.out_features, rank, generator=generator) * 0.01
        state[f"transformer.{name}.lora_A.weight"] = a.to(torch.bfloat16).contiguous()
        state[f"transformer.{name}.lora_B.weight"] = b.to(torch.bfloat16).contiguous()
    return save(state)


# --- The measurements -----------------------------------------------------------------------------


def run(args: argparse.Namespace, started: float) -> dict[str, dict[str, Any]]:
    cuda = torch.cuda.is_available() and not args.tiny
    size = REAL if cuda else TINY
    device = "cuda" if cuda else "cpu"
    scratch = choose_scratch(args.scratch, needed_gb=30 if cuda else 0)
    header = describe(size, device, scratch, args.budget_s)
    print(header, flush=True)
    rec = Recorder(Path(args.out), args.budget_s, header, started)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    errors = LastError()
    logging.getLogger("gpu_worker").addHandler(errors)
    try:
        measure_all(
            rec,
            size,
            device,
            scratch,
            errors,
            only_soul_id=getattr(args, "only_soul_id", False),
            groups=getattr(args, "groups", frozenset(DEFAULT_GROUPS)),
            baseline=not getattr(args, "no_baseline", False),
        )
    finally:
        logging.getLogger("gpu_worker").removeHandler(errors)
        torch.backends.cuda.matmul.allow_tf32 = tf32
        if not args.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    table = render_markdown(header, rec.results)
    rec.markdown.write_text(table)
    print("\n" + table, flush=True)
    return rec.results


def soul_id_trainer(size: Size, bench: Bench) -> Callable[..., dict[str, Any]]:
    """`train(batch, steps=..., learning_rate=...)`: one Soul ID training of TRAINING_PHOTOS face photos
    through the worker's Trainer, with its own timings and the steady seconds per step."""
    photo_keys = []
    for index in range(TRAINING_PHOTOS):
        key = f"characters/bench/photos/{index}.png"
        bench.storage.write(
            key, face_photo(100 + index, size.train_resolution + 64), content_type="image/png"
        )
        photo_keys.append(key)

    def train(batch: int, steps: int | None = None, learning_rate: float = 1e-4) -> dict[str, Any]:
        reset_speedups(bench.pipe(), uncompile=True)
        job = TrainingJob(
            job_id=bench._job_id(f"train-b{batch}"),
            route=bench.route,
            photo_keys=tuple(photo_keys),
            output_prefix=f"characters/bench/lora/b{batch}",
            seed=1,
            steps=steps or size.train_steps,
            rank=size.lora_rank,
            learning_rate=learning_rate,
            resolution=size.train_resolution,
            batch_size=batch,
        )
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        event = bench.trainer.run(job)
        if event.kind != "completed":
            raise RuntimeError(f"training failed: {event.reason_code} {event.message}")
        times = bench.step_times.get(job.job_id, [])
        result: dict[str, Any] = {"batch": batch, "steps": job.steps, "timings": dict(event.timings)}
        if len(times) > 1:
            result["steady_s_per_step"] = (times[-1] - times[0]) / (len(times) - 1)
        if torch.cuda.is_available():
            result["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return result

    return train


def measure_soul_id(rec: Recorder, size: Size, bench: Bench) -> None:
    """The shipped wan22 training recipe end to end (contract.TRAINING_DEFAULTS: its steps, batch and
    learning rate; at tiny size its batch and a tenth of its steps)."""
    recipe = TRAINING_DEFAULTS[FAMILY_WAN22]
    steps = recipe["steps"] if size.name == "real" else max(2, recipe["steps"] // 10)
    # The trainer trains the model the runner holds: load it with the first step of a small job.
    if rec.measure("load", 60, lambda: bench.generate("load", stop_after=1, small=True)) is None:
        return
    train = soul_id_trainer(size, bench)
    rec.measure(
        f"soul id recipe ({steps} steps, batch {recipe['batch_size']})",
        20 + steps * 0.6,  # 0.55 s a step at batch 4 on an H200
        lambda: train(recipe["batch_size"], steps=steps, learning_rate=recipe["learning_rate"]),
    )


MIN_DECODE_PSNR_DB = 40.0  # a decode setting joins the fastest profile only above this PSNR (same latents)


def measure_decode(
    bench: Bench, base: dict[str, Any], latents: torch.Tensor, reference: np.ndarray | None
) -> dict[str, Any]:
    """The baseline's latents decoded again with each decode setting (gpu_worker/speedups.py
    `vae_decode_dtype`, `cudnn_benchmark`) through the route's own decode (uint8 frames, as the runner's
    decode stage): seconds, peak memory, PSNR against the baseline's float32 decode of the same latents,
    and the settings the fastest profile takes (faster than the float32 decode stage and at least
    MIN_DECODE_PSNR_DB; at tiny size whatever the figures, so that the code runs)."""
    from gpu_worker.runner import warm_up_latents
    from gpu_worker.speedups import set_vae_decode_dtype

    model, pipe = bench.model(), bench.pipe()
    bench.probe.keep_frames = False
    float32_s = base["timings"]["decode"]
    result: dict[str, Any] = {"float32_decode_s": float32_s}  # the baseline job's decode stage
    if reference is not None:
        sample = reference[:: max(1, len(reference) // 8)]
        # Random weights: how much of the picture is clipped (a saturated clip would hide errors)
        result["reference_saturated"] = round(float(np.mean((sample == 0) | (sample == 255))), 4)
        result["reference_std"] = round(float(sample.std()), 2)
    variants = {
        "bfloat16": {"vae_decode_dtype": "bfloat16"},
        "bfloat16 + cudnn.benchmark": {"vae_decode_dtype": "bfloat16", "cudnn_benchmark": True},
    }
    measured: dict[str, dict[str, Any]] = {}
    try:
        for label, settings in variants.items():
            set_vae_decode_dtype(pipe.vae, settings.get("vae_decode_dtype"))
            torch.backends.cudnn.benchmark = bool(settings.get("cudnn_benchmark", False))
            entry: dict[str, Any] = {}
            with torch.no_grad():
                if torch.backends.cudnn.benchmark:  # the search, as a route's warm-up does it per shape
                    bench.sync()
                    started = time.perf_counter()
                    model.decode(pipe, warm_up_latents(latents), None)
                    bench.sync()
                    entry["search_s"] = time.perf_counter() - started
                _free()
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                bench.sync()
                started = time.perf_counter()
                frames = video.frames_to_uint8(np.asarray(model.decode(pipe, latents, None)))
                bench.sync()
            entry["decode_s"] = time.perf_counter() - started
            entry["x_vs_float32"] = float32_s / entry["decode_s"]
            if reference is not None:
                entry["psnr_db"] = psnr(frames, reference)
            if torch.cuda.is_available():
                entry["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
            del frames
            measured[label] = entry
    finally:
        set_vae_decode_dtype(pipe.vae, None)
        torch.backends.cudnn.benchmark = False
    forced = bench.size.name == "tiny"
    chosen: dict[str, Any] = {}
    half, searched = measured["bfloat16"], measured["bfloat16 + cudnn.benchmark"]
    if forced or (half.get("psnr_db", 0) >= MIN_DECODE_PSNR_DB and half["decode_s"] < float32_s):
        chosen["vae_decode_dtype"] = "bfloat16"
        searched_ok = searched.get("psnr_db", 0) >= MIN_DECODE_PSNR_DB
        if forced or (searched_ok and searched["decode_s"] < 0.97 * half["decode_s"]):
            chosen["cudnn_benchmark"] = True
    return {**result, "variants": measured, "chosen": chosen}


def compiled_graphs() -> int | None:
    """How many graphs dynamo has compiled in this process (None where the counter is not there)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:
        return None


def measure_hotswap(bench: Bench, profile: SpeedProfile) -> dict[str, Any]:
    """Users' LoRAs on the compiled route through the runner (gpu_worker/runner.py `LoraAdapters`, hot-swap
    mode): the first adds the LoRA layers to the compiled blocks (a recompilation, in its first step), the
    second is copied into the same slot (`load_lora_weights(..., hotswap=True)`), a job without a LoRA
    sets the slot's scale to 0. Two steps each: load stage, first step, steady step, graphs compiled."""
    route = bench.routed(profile)
    pipe = bench.pipe()
    keys = ("characters/bench/hotswap-a.safetensors", "characters/bench/hotswap-b.safetensors")
    for seed, key in enumerate(keys):
        data = random_lora(pipe.transformer, bench.size.lora_rank, 10 + seed)
        bench.storage.write(key, data, content_type="application/octet-stream")
    result: dict[str, Any] = {
        "lora_rank": bench.size.lora_rank,
        "slot_rank": bench.runner.lora.hotswap_rank,
        "lora_mb": round(len(bench.storage.read(keys[0], max_bytes=2**31)) / 1e6, 1),
    }
    for label, key in (("first LoRA", keys[0]), ("second LoRA (hot-swap)", keys[1]), ("no LoRA", None)):
        before = compiled_graphs()
        run = bench.generate(f"hotswap {label}", stop_after=2, route=route, lora_key=key)
        after = compiled_graphs()
        result[label] = {
            "load_s": run["timings"]["load"],
            "first_step_s": run.get("first_step_s"),
            "steady_s_per_step": run.get("steady_s_per_step"),
            "graphs_compiled": None if before is None or after is None else after - before,
        }
    result["slot_holds_second"] = bench.runner.lora.hotswap_key(pipe) == keys[1]
    return result


def measure_all(
    rec: Recorder,
    size: Size,
    device: str,
    scratch: Path,
    errors: LastError,
    *,
    only_soul_id: bool = False,
    groups: frozenset[str] = frozenset(DEFAULT_GROUPS),
    baseline: bool = True,
) -> None:
    model_root = scratch / "models"
    built = rec.measure("build", 0, lambda: build_checkpoint(model_root / CHECKPOINT, size, device))
    if built is None:
        return
    bench = Bench(size, device, model_root, LocalStorage(scratch / "media"), rec, errors)
    if only_soul_id:
        measure_soul_id(rec, size, bench)
        return
    few = size.few_steps

    # 1. Load (the first job), the baseline in full
    loaded = rec.measure(
        "load", bench.load_s + 2 * bench.step_s, lambda: bench.generate("load", stop_after=1, small=True)
    )
    if loaded is None:
        return
    bench.load_s = loaded["timings"]["load"]
    base_frames = base_latents = None
    if baseline:
        base = rec.measure(
            "baseline", bench.estimate_full(bench.step_s), lambda: bench.full("baseline", SpeedProfile())
        )
        if base is None:
            return
        base_frames, base_latents = bench.probe.frames, bench.probe.latents
        bench.step_s = base["s_per_step"]
    else:  # --no-baseline: nothing against diffusers' defaults (no PSNR against it, no decode variants)
        base = {"s_per_step": bench.step_s}

    # 2. Speed profiles: attention, the VAE decode's settings, then the fastest in full (warmed up per
    #    shape first), the same with the route's float32 decode, a LoRA hot-swapped into it
    attention = None
    if device == "cuda" and "attention" in groups:
        cudnn = rec.measure(
            "attention _native_cudnn",
            (few + 1) * bench.step_s + 5,
            lambda: bench.few("attention _native_cudnn", SpeedProfile(attention_backend="_native_cudnn")),
        )
        steady = base.get("steady_s_per_step", base["s_per_step"])
        if cudnn and cudnn.get("steady_s_per_step", math.inf) < 0.98 * steady:
            attention = "_native_cudnn"

    decode_settings: dict[str, Any] = {}
    if "vae_decode" in groups and base_latents is not None:
        decoded = rec.measure(
            "vae decode",
            3 * bench.decode_s + 10,
            lambda: measure_decode(bench, base, base_latents, base_frames),
        )
        if decoded is not None:
            decode_settings = decoded["chosen"]
    else:  # the decode not measured here: the shipped profile's decode settings
        decode_settings = {
            "vae_decode_dtype": SHIPPED.vae_decode_dtype,
            "cudnn_benchmark": SHIPPED.cudnn_benchmark,
        }

    fastest = SpeedProfile(
        attention_backend=attention,
        compile_blocks=True,
        cache="taylorseer",
        cache_params=TAYLORSEER,
        tf32=True,
        **decode_settings,
    )
    # If compiling fails with that backend, then without it, the fastest falls back to what works.
    candidates = [
        fastest,
        fastest.replace(attention_backend=None, cache="taylorseer", cache_params=TAYLORSEER),
    ]
    candidates.append(
        candidates[1].replace(compile_blocks=False, cache="taylorseer", cache_params=TAYLORSEER)
    )
    chosen: list[SpeedProfile] = []

    def warm_up() -> dict[str, Any]:
        """The worker's own warm-up (`Runner.warm_up`, as `preload` runs it): one step per warm-up
        shape, the blocks compiled for it, and with cudnn_benchmark a decode of its first latent
        frames; seconds per shape."""
        errors = []
        unique = {json.dumps(p.to_dict(), sort_keys=True): p for p in reversed(candidates)}
        for profile in reversed(unique.values()):
            try:
                if not profile.compile_blocks:
                    reset_speedups(bench.pipe(), uncompile=True)
                route = bench.routed(profile)
                seconds = bench.runner.warm_up(bench.model(), route)
            except Exception as exc:
                errors.append(f"{json.dumps(profile.to_dict())}: {type(exc).__name__}: {exc}"[:600])
                traceback.print_exc()
                continue
            chosen.append(profile)
            return {
                "seconds_per_shape": seconds,
                "decode_warm_up_s_per_shape": bench.runner.warmup_decodes.get(route.name, {}),
                "profile": profile.to_dict(),
                "failed_before": errors,
            }
        raise RuntimeError(" / ".join(errors))

    shapes = len(bench.runner.warmup_shapes or ())
    warm = None
    if groups & {"fastest", "hotswap", "previous"}:
        warm = rec.measure("warm-up", shapes * (size.guess_compile_s / 3 + 2 * bench.step_s), warm_up)
    computed = TAYLORSEER["disable_cache_before_step"] + math.ceil(
        (size.steps - TAYLORSEER["disable_cache_before_step"]) / TAYLORSEER["cache_interval"]
    )

    # The shipped profile in full (compiled blocks, TF32, its decode settings; no step cache): the
    # cache-free run the fastest's frames are compared with at the same seed. Two steps first (the blocks
    # compiled for it if the warm-up's profile did not; its steady step sizes the budget check).
    shipped_frames = None
    if "shipped" in groups:
        shipped_warm = rec.measure(
            "shipped (2-step warm)",
            3 * bench.step_s + (0 if warm else size.guess_compile_s) + 5,
            lambda: bench.few("shipped (2-step warm)", SHIPPED, steps=2),
        )
        if shipped_warm is not None:
            shipped_step = shipped_warm.get("steady_s_per_step") or bench.step_s
            shipped_run = rec.measure(
                "shipped",
                bench.estimate_full(shipped_step),
                lambda: bench.full("shipped", SHIPPED, against=base_frames),
            )
            if shipped_run is not None and shipped_run["outcome"] == "completed":
                shipped_frames = bench.probe.frames
                bench.step_s = min(bench.step_s, shipped_run.get("steady_s_per_step", bench.step_s))

    fastest_run = None
    if warm is not None and "fastest" in groups:
        fastest_run = rec.measure(
            "fastest",
            # Started with room for ~20 steps: a run stopped at the budget still gives its seconds per step.
            20 * bench.step_s * computed / size.steps + 10,
            lambda: bench.full(
                "fastest", chosen[0], against=base_frames, also_against={"shipped": shipped_frames}
            ),
        )
    fastest_frames = bench.probe.frames if fastest_run is not None else None
    if fastest_run is not None:
        bench.step_s = min(bench.step_s, fastest_run.get("steady_s_per_step", bench.step_s))

    # A user's LoRA into the compiled blocks: the first one adds the LoRA layers (one recompilation),
    # the next user's is hot-swapped into the same slot (none), a job without a LoRA sets its scale to 0.
    if warm is not None and "hotswap" in groups:
        rec.measure(
            "lora hotswap (compiled)",
            6 * bench.step_s + size.guess_compile_s / 3 + 10,
            lambda: measure_hotswap(bench, chosen[0]),
        )

    # The fastest profile as it was before the decode settings (the route's float32 decode): the same
    # compiled blocks and cache, so its frames differ from the fastest's by the decode alone.
    previous = (
        chosen[0].replace(
            vae_decode_dtype=None, cudnn_benchmark=False, cache="taylorseer", cache_params=TAYLORSEER
        )
        if chosen
        else None
    )
    if warm is not None and "previous" in groups and previous is not None and previous != chosen[0]:

        def previous_fastest() -> dict[str, Any]:
            pipe = bench.pipe()
            bench.runner.lora.apply(pipe, None, 1.0)  # the LoRA layers out (from the hot-swap above)
            warmed = bench.few("previous fastest (1-step warm)", previous, steps=1)
            result = bench.full(
                "fastest, float32 decode",
                previous,
                against=base_frames,
                also_against={"fastest": fastest_frames},
            )
            result["warm_first_step_s"] = warmed.get("first_step_s")
            return result

        rec.measure(
            "fastest, float32 decode",
            20 * bench.step_s * computed / size.steps + bench.decode_s + 10,
            previous_fastest,
        )

    # Compile alone (the backend and compilation that worked above)
    working = chosen[0] if chosen else fastest
    compiled = SpeedProfile(
        attention_backend=working.attention_backend, compile_blocks=working.compile_blocks, tf32=True
    )
    if "compile" in groups:
        rec.measure(
            "compile",
            (few + 1) * bench.step_s + (0 if warm else size.guess_compile_s),
            lambda: bench.few("compile", compiled),
        )

    # 3. Cancel: the flag set half a step after the first step ends
    def cancel() -> dict[str, Any]:
        def set_flag_later(job_id: str) -> None:
            timer = threading.Timer(
                0.5 * bench.step_s, lambda: bench.flags.setdefault(job_id, time.perf_counter())
            )
            timer.daemon = True
            timer.start()

        pipe = bench.pipe()
        reset_speedups(pipe, uncompile=True)
        apply_speedups(pipe, SpeedProfile())
        result = bench.generate("cancel", on_first_step=set_flag_later)
        flagged = bench.flags.get(result["job_id"])
        if flagged is None or result["outcome"] != "stopped":
            raise RuntimeError("the job was not canceled")
        result["flag_to_return_s"] = result["returned_at"] - flagged
        return result

    if "cancel" in groups:
        rec.measure("cancel", 4 * bench.step_s + 10, cancel)

    # 4. Soul ID training steps at batch 1, 4 and 8 (the trainer's own timings)
    if "training" in groups:
        train = soul_id_trainer(size, bench)
        for batch in (1, 4, 8):
            rec.measure(
                f"training batch {batch}", 15 + size.train_steps * bench.step_s / 4, lambda b=batch: train(b)
            )

    # 5. A user's LoRA: loaded through the runner, hot-swapped, unloaded (on uncompiled blocks)
    def lora() -> dict[str, Any]:
        pipe = bench.pipe()
        reset_speedups(pipe, uncompile=True)
        apply_speedups(pipe, SpeedProfile())
        keys = ("characters/bench/lora-a.safetensors", "characters/bench/lora-b.safetensors")
        for seed, key in enumerate(keys):
            data = random_lora(pipe.transformer, size.lora_rank, seed)
            bench.storage.write(key, data, content_type="application/octet-stream")
        first = bench.generate("lora", stop_after=2, lora_key=keys[0])
        from safetensors.torch import load as load_safetensors

        weights = load_safetensors(bench.storage.read(keys[1], max_bytes=2**31))
        bench.sync()
        started = time.perf_counter()
        hotswap: dict[str, Any] = {}
        try:
            name = bench.runner.lora.adapter_name(keys[0])
            pipe.load_lora_weights(weights, adapter_name=name, hotswap=True)
            bench.sync()
            hotswap["hotswap_s"] = time.perf_counter() - started
        except Exception as exc:  # recorded; the runner's own path below still runs
            hotswap["hotswap_error"] = f"{type(exc).__name__}: {exc}"[:300]
        second = bench.generate("lora-second", stop_after=1, lora_key=keys[1])
        started = time.perf_counter()
        bench.runner.lora.apply(pipe, None, 1.0)
        bench.sync()
        return {
            "lora_mb": round(len(bench.storage.read(keys[0], max_bytes=2**31)) / 1e6, 1),
            "load_with_lora_s": first["timings"]["load"],
            "load_without_lora_s": base["timings"]["load"],
            "lora_load_s": first["timings"]["load"] - base["timings"]["load"],
            "steady_s_per_step_with_lora": first.get("steady_s_per_step"),
            **hotswap,
            "second_adapter_load_s": second["timings"]["load"] - base["timings"]["load"],
            "unload_s": time.perf_counter() - started,
        }

    if "lora" in groups:
        rec.measure("lora", 5 * bench.step_s + 20, lora)

    # 6. Model switch: another route name over the same folder evicts the model and loads it again
    def switch() -> dict[str, Any]:
        bench.probe.detach()  # the bench's own reference would keep the evicted model on the GPU
        switched = dataclasses.replace(bench.route, name="wan22-ti2v-5b-b")
        return bench.generate("switch", stop_after=1, small=True, route=switched)

    if "switch" in groups:
        rec.measure("model switch", bench.load_s + 2 * bench.step_s + 5, switch)

    # 7. First-Block caches on the eager blocks (last: with random weights their skip decisions say
    #    little about the real checkpoint's)
    for threshold in (0.05, 0.2) if "first_block" in groups else ():
        rec.measure(
            f"first_block {threshold}",
            (few + 3) * bench.step_s,
            lambda t=threshold: bench.few(
                f"first_block {t}",
                SpeedProfile(cache="first_block", cache_params={"threshold": t}),
                steps=few + 2,
            ),
        )


def choose_scratch(requested: str | None, *, needed_gb: float) -> Path:
    if requested:
        path = Path(requested)
        path.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="gpu-real-", dir=path))
    shm = Path("/dev/shm")
    if needed_gb and shm.is_dir() and shutil.disk_usage(shm).free > needed_gb * 1.3e9:
        return Path(tempfile.mkdtemp(prefix="gpu-real-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="gpu-real-"))


def describe(size: Size, device: str, scratch: Path, budget_s: float) -> str:
    import diffusers
    import transformers

    gpu = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    return (
        f"Wan 2.2 TI2V-5B, random weights, size {size.name} ({size.width}x{size.height}x{size.frames}, "
        f"{size.steps} steps, guidance 5, image-to-video) on {gpu}; torch {torch.__version__}, diffusers "
        f"{diffusers.__version__}, transformers {transformers.__version__}; scratch {scratch}; "
        f"budget {budget_s:.0f} s"
    )


# --- The tables -----------------------------------------------------------------------------------


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def render_markdown(header: str, results: dict[str, dict[str, Any]]) -> str:
    lines = [f"# bench/gpu_real.py\n\n{header}\n"]
    base = results.get("baseline", {})
    base_step = base.get("s_per_step") if base.get("status") == "ok" else None
    base_steady = base.get("steady_s_per_step") if base.get("status") == "ok" else None
    lines += [
        "## Generation (seconds; GiB)\n",
        "| run | steps | load | text enc | s/step | steady s/step | x vs baseline | other denoise | decode "
        "| encode+gate | upload | total | clip (no load) | peak alloc | peak reserved | PSNR dB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if r.get("status") != "ok" or "timings" not in r or "job" not in r:
            continue
        t = r["timings"]
        gain = None
        if "profile" in r and name != "baseline":
            if r["outcome"] == "completed" and base_step and r.get("s_per_step"):
                gain = base_step / r["s_per_step"]
            elif base_steady and r.get("steady_s_per_step"):
                gain = base_steady / r["steady_s_per_step"]
        steps = f"{r.get('steps', 0)}/{r['job']['route_steps']}"
        if r["outcome"] == "stopped":
            steps += " (stopped)"
        lines.append(
            f"| {name} | {steps} | {_f(t.get('load'))} | {_f(r.get('text_encode_s'), 3)} "
            f"| {_f(r.get('s_per_step'), 3)} | {_f(r.get('steady_s_per_step'), 3)} | {_f(gain)} "
            f"| {_f(r.get('denoise_other_s'))} | {_f(t.get('decode'))} | {_f(r.get('encode_and_gate_s'))} "
            f"| {_f(t.get('upload'))} | {_f(t.get('total'))} | {_f(r.get('clip_s'))} "
            f"| {_f(r.get('peak_allocated_gib'), 1)} | {_f(r.get('peak_reserved_gib'), 1)} "
            f"| {_f(r.get('psnr_db'))} |"
        )
    lines += ["", "## Other measurements\n", "| measurement | status | figures |", "|---|---|---|"]
    for name, r in results.items():
        status = r.get("status")
        if status == "ok" and "timings" in r and "job" in r and name not in ("cancel", "model switch"):
            continue
        lines.append(f"| {name} | {status} | {_other_figures(name, r)} |")
    fastest = results.get("fastest", {})
    if (
        fastest.get("status") == "ok"
        and base.get("status") == "ok"
        and "clip_s" in fastest
        and "clip_s" in base
    ):
        job = base["job"]
        clip = f"{job['width']}x{job['height']}x{job['frames']}, {job['route_steps']}-step"
        lines += [
            "",
            f"Headline: a {clip} clip (model loaded, warm): baseline {_f(base['clip_s'], 1)} s, fastest "
            f"{_f(fastest['clip_s'], 1)} s ({_f(base['clip_s'] / fastest['clip_s'])}x end to end, "
            f"{_f(base['s_per_step'] / fastest['s_per_step'])}x per step), PSNR "
            f"{_f(fastest.get('psnr_db'))} dB against the baseline (random weights). Fastest profile: "
            f"`{json.dumps(fastest.get('profile'))}`.",
        ]
        previous = results.get("fastest, float32 decode", {})
        if previous.get("status") == "ok" and "clip_s" in previous:
            lines.append(
                f"\nThe same profile with the route's float32 decode: {_f(previous['clip_s'], 1)} s "
                f"({_f(base['clip_s'] / previous['clip_s'])}x end to end; decode "
                f"{_f(previous['timings'].get('decode'))} s against "
                f"{_f(fastest['timings'].get('decode'))} s), "
                f"PSNR {_f(previous.get('psnr_db'))} dB against the baseline; the fastest's frames against "
                f"it: {_f(previous.get('psnr_db_vs_fastest'))} dB (the decode alone)."
            )
    shipped = results.get("shipped", {})
    if fastest.get("psnr_db_vs_shipped") is not None and "clip_s" in fastest and "clip_s" in shipped:
        lines.append(
            f"\nAgainst the shipped profile (no step cache) at the same seed: shipped "
            f"{_f(shipped['clip_s'], 1)} s, fastest {_f(fastest['clip_s'], 1)} s "
            f"({_f(shipped['clip_s'] / fastest['clip_s'])}x end to end, "
            f"{_f(shipped['s_per_step'] / fastest['s_per_step'])}x per step); the fastest's frames against "
            f"the shipped run's: PSNR {_f(fastest['psnr_db_vs_shipped'])} dB (random weights). Shipped "
            f"profile: `{json.dumps(shipped.get('profile'))}`."
        )
    recipe = TRAINING_DEFAULTS[FAMILY_WAN22]
    measured = results.get(f"training batch {recipe['batch_size']}", {})
    if measured.get("status") == "ok" and measured.get("steady_s_per_step"):
        t = measured["timings"]
        estimate = (
            t.get("prepare", 0)
            + t.get("encode", 0)
            + recipe["steps"] * measured["steady_s_per_step"]
            + t.get("save", 0)
            + t.get("upload", 0)
        )
        lines.append(
            f"\nSoul ID training, {TRAINING_PHOTOS} photos, {recipe['steps']} steps at batch "
            f"{recipe['batch_size']} (the wan22 defaults), model loaded: about {_f(estimate, 0)} s "
            "(prepare + encode + steps x steady s/step + save + upload)."
        )
    return "\n".join(lines) + "\n"


def _other_figures(name: str, r: dict[str, Any]) -> str:
    status = r.get("status")
    if status == "skipped":
        return r.get("reason", "")
    if status == "error":
        return r.get("error", "").replace("|", "/").replace("\n", " ")
    if name == "cancel":
        flag, step = _f(r.get("flag_to_return_s")), _f(r.get("steady_s_per_step"))
        return f"flag to `run` returning: {flag} s (steady step {step} s)"
    if name == "model switch":
        return f"evict + reload (load stage): {_f(r['timings'].get('load'))} s"
    if name == "warm-up":
        shapes = ", ".join(f"{shape} {_f(seconds, 1)} s" for shape, seconds in r["seconds_per_shape"].items())
        decode_warm_ups = r.get("decode_warm_up_s_per_shape", {}).items()
        decodes = ", ".join(f"{shape} {_f(seconds, 1)} s" for shape, seconds in decode_warm_ups)
        text = f"per shape (one step, compile included): {shapes}"
        if decodes:
            text += f"; of which the decode of the first latent frames (cuDNN's search): {decodes}"
        return f"{text}; profile `{json.dumps(r.get('profile'))}`"
    skip = {"measurement", "at_s", "status", "traceback"}
    parts = [f"{key}: {_flat(value)}" for key, value in r.items() if key not in skip]
    return "; ".join(parts).replace("|", "/")


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k} {_flat(v)}" for k, v in value.items()) + ")"
    return value if isinstance(value, str) else _f(value)


# --- Entry point ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny size on the CPU (the default without CUDA)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_real"), help="output folder")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds for the whole run")
    parser.add_argument(
        "--scratch", default=None, help="folder for the checkpoint (default /dev/shm or /tmp)"
    )
    parser.add_argument("--keep-scratch", action="store_true")
    parser.add_argument(
        "--only-soul-id",
        action="store_true",
        help="build, then time only the shipped Soul ID training recipe",
    )
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_GROUPS),
        help="comma-separated measurements after the baseline (default: all but shipped): "
        + ", ".join(GROUPS),
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the diffusers-default baseline (no PSNR against it; vae_decode needs it)",
    )
    args = parser.parse_args(argv)
    args.groups = frozenset(name.strip() for name in args.only.split(",") if name.strip())
    if args.groups - set(GROUPS):
        parser.error(f"unknown --only names: {', '.join(sorted(args.groups - set(GROUPS)))}")
    if args.no_baseline and args.groups & {"vae_decode", "lora"}:
        parser.error("vae_decode and lora compare with the baseline: leave them out with --no-baseline")
    if args.budget_s is None:
        args.budget_s = 480.0 if torch.cuda.is_available() and not args.tiny else 120.0
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Run as a script, the clock started before the imports; called from a test, it starts now.
    results = run(args, STARTED if argv is None else time.monotonic())
    return 0 if results.get("build", {}).get("status") == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
