"""Identity-LoRA training (Soul ID): one `TrainingJob` in, events out, a safetensors LoRA in storage.

The recipe (reference/gpu.md §3-§4): the base pipeline of the job's route (the runner's cached model, so
the real Wan 2.2 TI2V-5B loads through pipelines/wan22.py exactly as for a generation), the photos
centre-cropped square at `resolution` and VAE-encoded as one-frame videos, the caption encoded once, then
`steps` AdamW steps of the flow-matching loss on a peft LoRA (rank = alpha, gaussian init) on the
transformer's attention projections (to_q, to_k, to_v, to_out.0 of attn1 and attn2):

    x_t = (1 - s) x_0 + s noise,  s ~ U(0, 1),  loss = |transformer(x_t, 1000 s, caption) - (noise - x_0)|^2

A training diverges when its loss is not finite, or past the first FINAL_LOSS_WINDOW steps above
DIVERGENCE_FACTOR times their mean: it starts over once (a fresh adapter) with another seed
(`runner.next_seed`), and if that one diverges too the job fails QUALITY_FAILED, not retryable (the
same job would diverge the same way).

The file is what `WanPipeline.save_lora_weights` writes (`transformer.blocks.N.attn1.to_q.lora_A.weight`
...), so `load_lora_weights` in the generation runner takes it by key.

Training happens in place on the cached generation transformer, on the runner's executor (one GPU, one
job at a time; gpu_worker/execution.py): the users' adapters are unloaded first, the training adapter
is removed afterwards (also on a cancel or an error) and the transformer is back in eval mode with its
base weights untouched, so the next generation runs exactly as before and no second copy of a 5B
transformer is needed. Everything random comes from the job's seed: on a CPU the same job gives the
same file, byte for byte.

    trainer = Trainer(runner)          # shares the runner's executor, storage and models
    event = trainer.run(job)           # the terminal event: completed, or failed with a reason code
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpu_worker import pipelines
from gpu_worker.contract import (
    FAMILY_TINY_WAN,
    JOB_TYPE_TRAINING,
    LORA_CONTENT_TYPE,
    LORA_FILE_NAME,
    QUALITY_FAILED,
    STAGE_LOADING_MODEL,
    STAGE_PREPARING,
    STAGE_SAVING,
    STAGE_TRAINING,
    STAGE_UPLOADING,
    TRAINING_MIN_PHOTOS,
    JobEvent,
    TrainingJob,
)
from gpu_worker.execution import BadInput, JobError, JobEvents, JobKind, JobRun
from gpu_worker.runner import MAX_IMAGE_BYTES, Runner, next_seed, prepare_image
from gpu_worker.storage import MissingObject, ObjectTooLarge

logger = logging.getLogger(__name__)

TRAINING_ADAPTER = "soul-id-training"
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
ENCODE_BATCH = 4  # photos per VAE call
FINAL_LOSS_WINDOW = 10  # `final_loss` is the mean of the last steps' losses
MAX_GRAD_NORM = 1.0
DIVERGENCE_FACTOR = 10.0  # a loss this many times the first steps' mean is exploding
WEIGHT_DECAY = 1e-4

# Where each stage sits on the job's 0..1 progress.
PROGRESS = {
    STAGE_PREPARING: 0.0,
    STAGE_LOADING_MODEL: 0.02,
    STAGE_TRAINING: 0.05,
    STAGE_SAVING: 0.95,
    STAGE_UPLOADING: 0.97,
}


class PhotosUnreadable(BadInput):
    """Some photos are missing, too large or not images; `keys` names them."""

    def __init__(self, keys: list[str], total: int) -> None:
        super().__init__(
            f"{len(keys)} of {total} photos are missing or cannot be read", outputs={"bad_photo_keys": keys}
        )
        self.keys = keys


class Diverged(Exception):
    """One run of the optimisation diverged (the message says where); the job may start over."""


class TrainingDiverged(JobError):
    reason_code = QUALITY_FAILED
    public_message = (
        "the training diverged twice, with a new seed the second time: try other photos or a lower "
        "learning rate"
    )


class TrainingEvents(JobEvents):
    """The events of one training run (job_type training; stages and progress of a training)."""

    job_type = JOB_TYPE_TRAINING
    stage_progress = PROGRESS

    def step(self, step: int, total: int, *, eta_seconds: float, interval: float) -> None:
        if not self._progress_due(interval):
            return
        start, end = PROGRESS[STAGE_TRAINING], PROGRESS[STAGE_SAVING]
        self.send_best_effort(
            self.build(
                "progress",
                stage=STAGE_TRAINING,
                progress=round(start + (end - start) * step / total, 4),
                step=step,
                total_steps=total,
                eta_seconds=round(eta_seconds, 1),
            )
        )


TRAINING = JobKind(noun="training", job_class=TrainingJob, events=TrainingEvents, retry_stage=STAGE_PREPARING)


@dataclass
class Trained:
    state_dict: dict[str, torch.Tensor]
    losses: list[float]


class Trainer:
    """Runs training jobs on a runner's models, one job at a time with the runner's generations."""

    def __init__(self, runner: Runner, *, gradient_checkpointing: bool | None = None) -> None:
        self.runner = runner
        self.executor = runner.executor  # one executor per GPU: a training never runs beside a generation
        # None: on for the real families (activations of a 5B transformer), off for tiny-wan.
        self.gradient_checkpointing = gradient_checkpointing

    # Public API

    def run(self, job: TrainingJob | dict[str, Any], *, final_attempt: bool = True) -> JobEvent:
        """As `Runner.run`, for a training job (on the runner's executor: never beside a generation)."""
        return self.executor.run(TRAINING, job, self._train_job, final_attempt=final_attempt)

    def report_failure(self, job_id: str, reason_code: str, message: str, *, attempt: int = 1) -> JobEvent:
        """Sends a terminal failure decided outside a run (a time limit, a refused message)."""
        return self.executor.report_failure(TRAINING, job_id, reason_code, message, attempt=attempt)

    # The steps of one job

    def _train_job(self, run: JobRun) -> JobEvent:
        job: TrainingJob = run.job
        events = run.events
        # 1. The photos: read, decoded, cropped square at the resolution (BAD_INPUT before any loading)
        run.check_cancel()
        events.stage(STAGE_PREPARING)
        with run.timed("prepare"):
            photos = self._read_photos(job)

        # 2. The base model (cached between jobs), without any user's adapter
        run.check_cancel()
        events.stage(STAGE_LOADING_MODEL)
        with run.timed("load"):
            model = self.runner.load_model(job.route)
            pipe = model.t2v  # Wan families: the text-to-video pipeline holds the transformer to adapt
            self.runner.lora.apply(pipe, None, 1.0)

        # 3. Photos to latents and the caption to embeddings, once
        generator = torch.Generator("cpu").manual_seed(job.seed)
        with run.timed("encode"):
            latents, embeddings = self._encode(pipe, job, photos, generator)
        del photos

        # 4. Train (progress and a cancel check at every step); once more with a new seed if it diverges
        seed = job.seed
        run.check_cancel()
        events.stage(STAGE_TRAINING, total_steps=job.steps)
        for training_attempt in (1, 2):
            run.check_cancel()
            try:
                with run.timed("train"):
                    trained = self._optimise(run, pipe, latents, embeddings, generator, seed)
                break
            except Diverged as exc:
                logger.warning("training %s diverged with seed %s: %s", job.job_id, seed, exc)
                if training_attempt == 2:
                    raise TrainingDiverged(f"seeds {job.seed} and {seed}: {exc}") from None
            seed = next_seed(seed)
            generator = torch.Generator("cpu").manual_seed(seed)
            events.stage(
                STAGE_TRAINING,
                total_steps=job.steps,
                reason_code=QUALITY_FAILED,
                message="the training diverged; retrying with a new seed",
            )
        del latents, embeddings

        # 5. Save in diffusers' LoRA format
        run.check_cancel()
        events.stage(STAGE_SAVING)
        with run.timed("save"):
            path = self._save(job, pipe, trained.state_dict, run.work)
            digest = _sha256(path)

        # 6. Upload (nothing is written to storage before this point)
        run.check_cancel()
        events.stage(STAGE_UPLOADING)
        with run.timed("upload"):
            size = self.runner.storage.write_file(job.lora_key, path, content_type=LORA_CONTENT_TYPE)

        window = trained.losses[-FINAL_LOSS_WINDOW:]
        outputs = {
            "lora": {"key": job.lora_key, "content_type": LORA_CONTENT_TYPE, "bytes": size, "sha256": digest},
            "route": job.route.name,
            "family": job.family,
            "base_checkpoint": job.base_checkpoint,
            "trigger": job.trigger,
            "prompt": job.prompt,
            "rank": job.rank,
            "resolution": job.resolution,
            "photos": len(job.photo_keys),
            "steps": len(trained.losses),
            "seed": seed,
            "first_loss": round(trained.losses[0], 6),
            "final_loss": round(sum(window) / len(window), 6),
        }
        return run.completed(
            seconds_per_step=run.timings["train"] / (job.steps * training_attempt),
            step=len(trained.losses),
            total_steps=job.steps,
            outputs=outputs,
        )

    def _read_photos(self, job: TrainingJob) -> list[Any]:
        if len(job.photo_keys) < TRAINING_MIN_PHOTOS:
            raise BadInput(f"training needs at least {TRAINING_MIN_PHOTOS} photos, got {len(job.photo_keys)}")
        images, unreadable = [], []
        for key in job.photo_keys:
            try:
                data = self.runner.storage.read(key, max_bytes=MAX_IMAGE_BYTES)
                images.append(prepare_image(data, width=job.resolution, height=job.resolution))
            except (MissingObject, ObjectTooLarge, BadInput):
                unreadable.append(key)
        if unreadable:
            raise PhotosUnreadable(unreadable, len(job.photo_keys))
        return images

    @torch.no_grad()
    def _encode(
        self, pipe: Any, job: TrainingJob, photos: list[Any], generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised latents (N, C, 1, h, w) in float32 on the device, and the caption's embeddings."""
        device = pipe._execution_device
        vae = pipe.vae
        pixels = torch.from_numpy(np.stack([np.asarray(photo, dtype=np.float32) for photo in photos]))
        pixels = (pixels / 127.5 - 1.0).permute(0, 3, 1, 2).unsqueeze(2)  # (N, 3, 1, H, W) in [-1, 1]
        chunks = []
        for start in range(0, len(pixels), ENCODE_BATCH):
            batch = pixels[start : start + ENCODE_BATCH].to(device=device, dtype=vae.dtype)
            chunks.append(vae.encode(batch).latent_dist.sample(generator=generator).float())
        latents = torch.cat(chunks)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean, device=latents.device).view(shape)
        std = torch.tensor(vae.config.latents_std, device=latents.device).view(shape)
        latents = (latents - mean) / std
        max_length = pipelines.family_module(job.family).MAX_SEQUENCE_LENGTH
        embeddings, _ = pipe.encode_prompt(
            job.prompt,
            do_classifier_free_guidance=False,
            max_sequence_length=max_length,
            device=device,
            dtype=pipe.transformer.dtype,
        )
        return latents.to(device), embeddings

    def _optimise(
        self,
        run: JobRun,
        pipe: Any,
        latents: torch.Tensor,
        embeddings: torch.Tensor,
        generator: torch.Generator,
        seed: int,
    ) -> Trained:
        """`job.steps` steps on a fresh adapter initialised from `seed`; Diverged when the loss does."""
        from peft.utils import get_peft_model_state_dict

        job: TrainingJob = run.job
        transformer = pipe.transformer
        dtype, device = transformer.dtype, latents.device
        count, batch = len(latents), min(job.batch_size, len(latents))
        interval = self.runner.progress_interval
        losses: list[float] = []
        with training_adapter(pipe, seed, rank=job.rank, checkpointing=self._checkpointing(job)) as params:
            optimizer = torch.optim.AdamW(params, lr=job.learning_rate, weight_decay=WEIGHT_DECAY)
            order: list[int] = []
            started = time.perf_counter()
            for step in range(job.steps):
                # Each photo once per epoch, in an order drawn from the seed
                while len(order) < batch:
                    order += torch.randperm(count, generator=generator).tolist()
                index, order = order[:batch], order[batch:]
                x0 = latents[index]
                noise = torch.randn(x0.shape, generator=generator).to(device)
                sigma = torch.rand(batch, generator=generator).to(device)
                s = sigma.view(-1, 1, 1, 1, 1)
                noisy = ((1 - s) * x0 + s * noise).to(dtype)
                prediction = transformer(
                    hidden_states=noisy,
                    timestep=sigma * 1000,
                    encoder_hidden_states=embeddings.expand(batch, -1, -1),
                    return_dict=False,
                )[0]
                loss = torch.nn.functional.mse_loss(prediction.float(), noise - x0)
                value = loss.item()
                check_loss(value, losses, step=step + 1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
                optimizer.step()
                losses.append(value)

                done = step + 1
                elapsed = time.perf_counter() - started
                run.events.step(
                    done, job.steps, eta_seconds=elapsed / done * (job.steps - done), interval=interval
                )
                run.check_cancel()
            del optimizer
            state = get_peft_model_state_dict(transformer, adapter_name=TRAINING_ADAPTER)
            # Saved in the base transformer's dtype (bfloat16 on the real route: half the file).
            state = {key: value.detach().to("cpu", dtype).contiguous() for key, value in state.items()}
        return Trained(state_dict=state, losses=losses)

    def _save(self, job: TrainingJob, pipe: Any, state: dict[str, torch.Tensor], work: Path) -> Path:
        type(pipe).save_lora_weights(
            work,
            transformer_lora_layers=state,
            safe_serialization=True,
            weight_name=LORA_FILE_NAME,
            transformer_lora_adapter_metadata={
                "r": job.rank,
                "lora_alpha": job.rank,
                "target_modules": list(TARGET_MODULES),
            },
        )
        path = work / LORA_FILE_NAME
        _sort_header_metadata(path)
        return path

    def _checkpointing(self, job: TrainingJob) -> bool:
        if self.gradient_checkpointing is not None:
            return self.gradient_checkpointing
        return job.family != FAMILY_TINY_WAN


def check_loss(value: float, earlier: list[float], *, step: int) -> None:
    """Raises Diverged when a step's loss is not finite, or (past the first FINAL_LOSS_WINDOW steps)
    above DIVERGENCE_FACTOR times their mean."""
    if not math.isfinite(value):
        raise Diverged(f"the loss is {value} at step {step}")
    if len(earlier) >= FINAL_LOSS_WINDOW:
        start = sum(earlier[:FINAL_LOSS_WINDOW]) / FINAL_LOSS_WINDOW
        if value > DIVERGENCE_FACTOR * start:
            raise Diverged(f"the loss is {value:.4g} at step {step}, from {start:.4g} at the start")


@contextlib.contextmanager
def training_adapter(
    pipe: Any, seed: int, *, rank: int, checkpointing: bool
) -> Iterator[list[torch.nn.Parameter]]:
    """Adds the training LoRA to `pipe.transformer` and yields its parameters (float32, trainable); on
    the way out, whatever happened, removes it and puts the transformer back as it was (eval mode,
    gradient flags, no gradient checkpointing), so generations see the base weights again."""
    from peft import LoraConfig

    transformer = pipe.transformer
    flags = {name: p.requires_grad for name, p in transformer.named_parameters()}
    transformer.requires_grad_(False)
    added = False
    try:
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)  # the LoRA init (peft draws on the CPU)
            transformer.add_adapter(
                LoraConfig(
                    r=rank,
                    lora_alpha=rank,
                    init_lora_weights="gaussian",
                    target_modules=list(TARGET_MODULES),
                ),
                adapter_name=TRAINING_ADAPTER,
            )
        added = True
        params = [p for p in transformer.parameters() if p.requires_grad]
        for param in params:
            param.data = param.data.float()  # float32 adapter weights over a bfloat16 base
        if checkpointing:
            transformer.enable_gradient_checkpointing()
        transformer.train()
        yield params
    finally:
        transformer.eval()
        if checkpointing:
            transformer.disable_gradient_checkpointing()
        if added:
            pipe.unload_lora_weights()  # removes the peft layers: the modules are the base ones again
        for name, param in transformer.named_parameters():
            param.requires_grad_(flags.get(name, param.requires_grad))
        transformer.zero_grad(set_to_none=True)
        _empty_cuda_cache()


def _empty_cuda_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sort_header_metadata(path: Path) -> None:
    """Puts the `__metadata__` entries of a safetensors header in a fixed order, in place.

    safetensors writes them from a hash map, in an order that changes from call to call, so two runs of
    the same job would give files that differ in their header alone. The header keeps its length (the
    same entries, compact JSON, padded with spaces as safetensors pads it), so the tensor data stays put.
    """
    with path.open("r+b") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
        metadata = header.get("__metadata__")
        if not isinstance(metadata, dict) or len(metadata) < 2:
            return
        header["__metadata__"] = dict(sorted(metadata.items()))
        encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(encoded) > size:  # not the layout this expects: leave the file as safetensors wrote it
            return
        handle.seek(8)
        handle.write(encoded + b" " * (size - len(encoded)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["PhotosUnreadable", "Trainer", "TrainingEvents", "training_adapter"]
