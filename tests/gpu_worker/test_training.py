"""Soul ID training on the real tiny-wan route (CPU): synthetic face photos in storage, a LoRA file out,
events with steps; the generation runner loads the file by key. The file is read back with safetensors
itself, not with gpu_worker."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from gpu_worker.contract import (
    BAD_INPUT,
    CANCELED,
    JOB_TYPE_TRAINING,
    OUT_OF_MEMORY,
    QUALITY_FAILED,
    STAGE_LOADING_MODEL,
    STAGE_PREPARING,
    STAGE_SAVING,
    STAGE_TRAINING,
    STAGE_UPLOADING,
    TrainingJob,
    training_defaults,
)
from tests.fixtures.gpu import decoded_frames, make_job, tiny_route

TINY_KEY = ("tiny-wan", "tiny-wan", "")
TARGETS = {f"blocks.{b}.{attn}.{proj}" for b in (0, 1) for attn in ("attn1", "attn2") for proj in
           ("to_q", "to_k", "to_v", "to_out.0")}  # fmt: skip


def face_photo(seed: int, size: int = 32, fmt: str = "PNG") -> bytes:
    """A face-ish picture: skin-coloured oval, hair, two eyes and a mouth, on a random background, with
    the position, light and colours varying by seed."""
    rng = np.random.default_rng(seed)
    scale = size / 32
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    cx, cy = size / 2 + rng.uniform(-2, 2) * scale, size / 2 + rng.uniform(-1, 2) * scale
    light = rng.uniform(0.8, 1.15)
    skin = tuple(int(min(255, c * light)) for c in (224 + rng.integers(-15, 15), 172, 140))
    draw.ellipse([cx - 9 * scale, cy - 12 * scale, cx + 9 * scale, cy + 12 * scale], fill=skin)
    draw.pieslice([cx - 10 * scale, cy - 14 * scale, cx + 10 * scale, cy], 180, 360, fill=(60, 40, 25))
    for side in (-1, 1):
        ex, ey = cx + side * 4 * scale, cy - 2 * scale
        draw.ellipse([ex - 1.5 * scale, ey - 1 * scale, ex + 1.5 * scale, ey + 1 * scale], fill=(30, 30, 40))
    draw.arc([cx - 4 * scale, cy + 3 * scale, cx + 4 * scale, cy + 8 * scale], 20, 160, fill=(150, 60, 60))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=92)
    return buffer.getvalue()


def store_photos(storage, count: int = 15, prefix: str = "characters/c1/crops") -> list[str]:
    keys = []
    for i in range(count):
        fmt = "JPEG" if i % 3 == 0 else "PNG"
        size = 48 if i % 5 == 0 else 32  # a few larger crops: resized down by the worker
        key = f"{prefix}/{i:02d}.{fmt.lower()}"
        storage.write(key, face_photo(i, size, fmt), content_type=f"image/{fmt.lower()}")
        keys.append(key)
    return keys


def training_job(keys, **overrides) -> TrainingJob:
    fields = {
        "job_id": "c1",
        "route": tiny_route(),
        "photo_keys": keys,
        "output_prefix": "characters/c1/lora/1",
        "seed": 5,
        **training_defaults("tiny-wan"),
        "steps": 8,
    }
    return TrainingJob(**{**fields, **overrides})


@pytest.fixture
def trainer(runner):
    from gpu_worker.training import Trainer

    return Trainer(runner)


def _files_under(storage, prefix: str) -> list[str]:
    folder = storage.root / prefix
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _read_lora(storage, key: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(storage.root / key), "pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}, handle.metadata()  # noqa: SIM118


# --- Training ------------------------------------------------------------------------------------


def test_training_writes_a_diffusers_lora_to_storage_and_reports_it(trainer, storage, event_log):
    keys = store_photos(storage, 15)
    job = training_job(keys, steps=8, rank=4)

    terminal = trainer.run(job.to_message())

    assert terminal.kind == "completed", terminal
    key = "characters/c1/lora/1/pytorch_lora_weights.safetensors"
    data = (storage.root / key).read_bytes()
    tensors, metadata = _read_lora(storage, key)
    assert {name.removeprefix("transformer.").rsplit(".lora_", 1)[0] for name in tensors} == TARGETS
    assert all(name.startswith("transformer.blocks.") for name in tensors) and len(tensors) == 2 * len(
        TARGETS
    )
    assert tensors["transformer.blocks.0.attn1.to_q.lora_A.weight"].shape == (4, 24)
    assert tensors["transformer.blocks.0.attn2.to_out.0.lora_B.weight"].shape == (24, 4)
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in tensors.values())
    lora_b = [t for name, t in tensors.items() if "lora_B" in name]
    assert all(t.abs().sum() > 0 for t in lora_b)  # trained away from the zero initialisation
    adapter = json.loads(metadata["lora_adapter_metadata"])
    assert (adapter["transformer.r"], adapter["transformer.lora_alpha"]) == (4, 4)
    assert (
        storage.root / ".meta" / f"{key}.json"
    ).read_text() == '{"content_type": "application/octet-stream"}'

    outputs = terminal.outputs
    assert outputs["lora"] == {
        "key": key,
        "content_type": "application/octet-stream",
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert {k: v for k, v in outputs.items() if k not in ("lora", "first_loss", "final_loss")} == {
        "route": "tiny-wan",
        "family": "tiny-wan",
        "base_checkpoint": "",
        "trigger": "sks person",
        "prompt": "a photo of sks person",
        "rank": 4,
        "resolution": 32,
        "photos": 15,
        "steps": 8,
        "seed": 5,
    }
    assert (
        np.isfinite(outputs["first_loss"])
        and np.isfinite(outputs["final_loss"])
        and outputs["final_loss"] > 0
    )
    assert set(terminal.timings) == {
        "prepare",
        "load",
        "encode",
        "train",
        "save",
        "upload",
        "total",
        "seconds_per_step",
    }
    assert terminal.timings["seconds_per_step"] == pytest.approx(terminal.timings["train"] / 8, abs=1e-3)
    assert terminal.timings["total"] >= terminal.timings["train"] > 0
    assert (terminal.job_type, terminal.step, terminal.total_steps, terminal.progress) == (
        JOB_TYPE_TRAINING,
        8,
        8,
        1.0,
    )


def test_events_come_in_stage_order_with_steps_and_an_eta(trainer, storage, event_log):
    job = training_job(store_photos(storage, 12), steps=6)

    trainer.run(job)

    events = event_log.of(job.job_id)
    assert all(event.job_type == JOB_TYPE_TRAINING for event in events)
    sequences = [event.sequence for event in events]
    assert sequences == sorted(set(sequences))
    assert [e.stage for e in events if e.kind == "stage"] == [
        STAGE_PREPARING,
        STAGE_LOADING_MODEL,
        STAGE_TRAINING,
        STAGE_SAVING,
        STAGE_UPLOADING,
    ]
    progress = [e for e in events if e.kind == "progress"]
    assert [(e.stage, e.step, e.total_steps) for e in progress] == [
        (STAGE_TRAINING, i, 6) for i in range(1, 7)
    ]
    assert progress[-1].eta_seconds == 0.0 and all(e.eta_seconds >= 0 for e in progress)
    assert [e.progress for e in events] == sorted(e.progress for e in events)
    assert events[-1].kind == "completed" and not any(e.is_terminal for e in events[:-1])


def test_progress_is_throttled(make_runner, storage, event_log):
    from gpu_worker.training import Trainer

    job = training_job(store_photos(storage, 10), steps=6)
    Trainer(make_runner(progress_interval=3600)).run(job)
    assert [e.step for e in event_log.of(job.job_id) if e.kind == "progress"] == [1]


def test_the_same_seed_gives_the_same_file_and_another_seed_another(trainer, make_runner, storage):
    from gpu_worker.training import Trainer

    keys = store_photos(storage, 10)
    first = trainer.run(training_job(keys, output_prefix="characters/c1/lora/a"))
    again = trainer.run(training_job(keys, output_prefix="characters/c1/lora/b"))
    other = trainer.run(training_job(keys, output_prefix="characters/c1/lora/c", seed=6))
    fresh = Trainer(make_runner()).run(training_job(keys, output_prefix="characters/c1/lora/d"))

    digests = [event.outputs["lora"]["sha256"] for event in (first, again, other, fresh)]
    assert digests[0] == digests[1] == digests[3]  # a fresh runner (the model built again) too
    assert digests[2] != digests[0]
    assert first.outputs["final_loss"] == fresh.outputs["final_loss"]


def test_the_trained_lora_loads_in_the_generation_runner_and_training_leaves_the_pipeline_as_it_was(
    runner, trainer, storage, lora_file
):
    keys = store_photos(storage, 15)
    storage.write("characters/c0/lora.safetensors", lora_file, content_type="application/octet-stream")
    base = make_job(seed=3)
    assert runner.run(base).kind == "completed"
    pipe = runner.models[TINY_KEY].t2v
    # Another user's LoRA is loaded on the cached pipeline when the training comes in.
    assert runner.run(make_job(seed=3, lora_key="characters/c0/lora.safetensors")).kind == "completed"
    weights_before = {name: value.clone() for name, value in pipe.transformer.state_dict().items()}
    weights_before = {k: v for k, v in weights_before.items() if "lora_" not in k}

    trained = trainer.run(training_job(keys, steps=10))

    assert trained.kind == "completed"
    assert next(iter(runner.models.values())).t2v is pipe  # trained on the cached model, not a second copy
    assert pipe.get_list_adapters() == {} and not pipe.transformer.training
    assert runner.lora.active(pipe) == []
    weights_after = pipe.transformer.state_dict()
    assert weights_after.keys() == {k.replace(".base_layer", "") for k in weights_before}
    assert all(torch.equal(weights_after[k.replace(".base_layer", "")], v) for k, v in weights_before.items())

    base_after, with_lora, base_again = make_job(seed=3), make_job(seed=3), make_job(seed=3)
    with_lora = make_job(seed=3, lora_key=trained.outputs["lora"]["key"])
    for job in (base_after, with_lora, base_again):
        assert runner.run(job).kind == "completed"
    frames = {
        job.job_id: decoded_frames(storage.root / job.video_key)
        for job in (base, base_after, with_lora, base_again)
    }
    assert np.array_equal(frames[base.job_id], frames[base_after.job_id])  # training left nothing behind
    assert not np.array_equal(frames[base.job_id], frames[with_lora.job_id])  # the LoRA changes the output
    assert np.array_equal(frames[base.job_id], frames[base_again.job_id])  # no LoRA: the base again
    # Image-to-video takes the same file (the i2v transformer has the same attention shapes).
    storage.write("uploads/u1/selfie", face_photo(1, 64), content_type="image/png")
    i2v = make_job(seed=3, image_key="uploads/u1/selfie", lora_key=trained.outputs["lora"]["key"])
    assert runner.run(i2v).kind == "completed"


def test_a_training_on_the_wan22_loading_code_with_gradient_checkpointing(
    make_runner, storage, tiny_model_root, monkeypatch
):
    """The real route's loader (pipelines/wan22.py: z_dim 48 VAE, expand_timesteps) on a tiny saved
    checkpoint, in float32 on the CPU, with the gradient checkpointing the real route trains with."""
    from gpu_worker.pipelines import wan22
    from gpu_worker.training import Trainer
    from tests.gpu_worker.test_pipelines import wan22_route

    real_load = wan22.load
    monkeypatch.setattr(wan22, "load", lambda r, **kw: real_load(r, **{**kw, "dtype": torch.float32}))
    runner = make_runner(model_root=tiny_model_root)
    route = wan22_route(checkpoint="wan22-tiny", width=32, height=32, frames=9, steps=2)
    trainer = Trainer(runner)
    checkpointing = []
    original = trainer._checkpointing
    trainer._checkpointing = lambda job: checkpointing.append(original(job)) or checkpointing[-1]
    job = training_job(store_photos(storage, 10), route=route, resolution=32, steps=4, rank=8)

    terminal = trainer.run(job)

    assert terminal.kind == "completed", terminal
    assert checkpointing == [True]
    assert (terminal.outputs["family"], terminal.outputs["base_checkpoint"]) == ("wan22", "wan22-tiny")
    tensors, _ = _read_lora(storage, job.lora_key)
    assert tensors["transformer.blocks.0.attn1.to_k.lora_A.weight"].shape == (8, 24)
    model = next(iter(runner.models.values()))
    assert not model.t2v.transformer.is_gradient_checkpointing
    base, with_lora = make_job(route=route, seed=1), make_job(route=route, seed=1, lora_key=job.lora_key)
    for generation in (base, with_lora):
        assert runner.run(generation).kind == "completed"
    assert not np.array_equal(
        decoded_frames(storage.root / base.video_key), decoded_frames(storage.root / with_lora.video_key)
    )


# --- Cancel and failures ---------------------------------------------------------------------------


def test_cancel_mid_training_stops_within_one_step_and_uploads_nothing(
    runner, trainer, storage, event_log, cancel_flags
):
    keys = store_photos(storage, 10)
    job = training_job(keys, steps=40)
    cancel_at = 3

    def cancel_at_step(event):
        if event.job_id == job.job_id and event.kind == "progress" and event.step == cancel_at:
            cancel_flags.set(job.job_id)

    event_log.listeners.append(cancel_at_step)
    runner.run(make_job())  # the model is loaded
    pipe = runner.models[TINY_KEY].t2v
    forward_calls = []
    hook = pipe.transformer.register_forward_hook(lambda *args: forward_calls.append(1))

    terminal = trainer.run(job)
    hook.remove()

    assert (terminal.kind, terminal.reason_code, terminal.retryable) == ("failed", CANCELED, False)
    assert len(forward_calls) == cancel_at
    events = event_log.of(job.job_id)
    assert [e.step for e in events if e.kind == "progress"] == [1, 2, 3]
    assert STAGE_SAVING not in [e.stage for e in events] and events[-1] == terminal
    assert _files_under(storage, "characters/c1/lora") == []
    assert pipe.get_list_adapters() == {} and not pipe.transformer.training

    event_log.listeners.clear()
    cancel_flags.flags.clear()
    after = trainer.run(training_job(keys, output_prefix="characters/c1/lora/2"))
    assert after.kind == "completed"


def test_a_training_canceled_while_queued_never_loads_anything(
    runner, trainer, storage, event_log, cancel_flags
):
    job = training_job(store_photos(storage, 10))
    cancel_flags.set(job.job_id)

    terminal = trainer.run(job)

    assert (terminal.kind, terminal.reason_code) == ("failed", CANCELED)
    assert [e.kind for e in event_log.of(job.job_id)] == ["failed"]
    assert runner.models == {}


def _corrupt(storage, keys):
    storage.write(keys[4], b"\x89PNG\r\n\x1a\n but the rest is gone", content_type="image/png")
    return [keys[4]]


def _missing(storage, keys):
    (storage.root / keys[7]).unlink()
    return [keys[7]]


def _both(storage, keys):
    return _corrupt(storage, keys) + _missing(storage, keys)


@pytest.mark.parametrize(
    ("count", "spoil", "message"),
    [
        (0, None, "training needs at least 10 photos, got 0"),
        (9, None, "training needs at least 10 photos, got 9"),
        (12, _corrupt, "1 of 12 photos are missing or cannot be read"),
        (12, _missing, "1 of 12 photos are missing or cannot be read"),
        (12, _both, "2 of 12 photos are missing or cannot be read"),
    ],
    ids=["no-photos", "too-few", "corrupt", "missing", "corrupt-and-missing"],
)
def test_bad_photos_fail_bad_input_not_retryable_naming_them(
    runner, trainer, storage, event_log, count, spoil, message
):
    keys = store_photos(storage, count)
    bad = spoil(storage, keys) if spoil else []

    terminal = trainer.run(training_job(keys))

    assert (terminal.kind, terminal.reason_code, terminal.retryable) == ("failed", BAD_INPUT, False)
    assert terminal.message == message
    assert terminal.outputs.get("bad_photo_keys", []) == bad
    assert [e.stage for e in event_log.of("c1") if e.kind == "stage"] == [STAGE_PREPARING]
    assert runner.models == {}  # refused before loading anything
    assert _files_under(storage, "characters/c1/lora") == []


def test_out_of_memory_is_retryable_and_the_pipeline_is_clean_after(runner, trainer, storage, monkeypatch):
    keys = store_photos(storage, 10)
    runner.run(make_job())
    transformer = runner.models[TINY_KEY].t2v.transformer
    real_forward = transformer.forward
    calls = []

    def forward(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(transformer, "forward", forward)
    terminal = trainer.run(training_job(keys))
    monkeypatch.undo()

    assert (terminal.kind, terminal.reason_code, terminal.retryable) == ("failed", OUT_OF_MEMORY, True)
    assert "GiB" not in terminal.message and terminal.timings["train"] > 0
    assert runner.models[TINY_KEY].t2v.get_list_adapters() == {}
    assert not any("lora" in name for name, _ in transformer.named_parameters())
    assert _files_under(storage, "characters/c1/lora") == []
    assert trainer.run(training_job(keys)).kind == "completed"


def test_a_retryable_failure_on_a_non_final_attempt_is_announced_not_terminal(
    make_runner, storage, event_log
):
    from gpu_worker.training import Trainer
    from tests.gpu_worker.test_pipelines import wan22_route

    job = training_job(store_photos(storage, 10), route=wan22_route(checkpoint="absent"), resolution=32)
    outcome = Trainer(make_runner()).run(job, final_attempt=False)

    assert (outcome.reason_code, outcome.retryable) == ("MODEL_UNAVAILABLE", True)
    events = event_log.of(job.job_id)
    assert not any(e.is_terminal for e in events)
    assert events[-1].reason_code == "MODEL_UNAVAILABLE" and "retrying" in events[-1].message


# --- A training that diverges --------------------------------------------------------------------


def _poison_the_loss(transformer, *, calls: set[int] | None, factor: float):
    """Multiplies the transformer's prediction by `factor` at the given forward calls (1-based; None:
    every call): a NaN, or a prediction far off, so the loss goes NaN or explodes."""
    count = [0]

    def hook(module, args, output):
        count[0] += 1
        if calls is None or count[0] in calls:
            return (output[0] * factor, *output[1:])
        return output

    return transformer.register_forward_hook(hook)


@pytest.mark.parametrize(
    ("poisoned", "factor", "steps"),
    [({3}, float("nan"), 8), (set(range(12, 17)), 1e3, 16)],
    ids=["nan-loss", "exploding-loss"],
)
def test_a_diverged_training_starts_over_once_with_a_new_seed_and_completes(
    runner, trainer, storage, event_log, poisoned, factor, steps
):
    from gpu_worker.runner import next_seed

    keys = store_photos(storage, 10)
    runner.run(make_job())
    transformer = runner.models[TINY_KEY].t2v.transformer
    hook = _poison_the_loss(transformer, calls=poisoned, factor=factor)  # in the first run only
    try:
        terminal = trainer.run(training_job(keys, steps=steps))
    finally:
        hook.remove()

    assert terminal.kind == "completed"
    assert terminal.outputs["seed"] == next_seed(5) and terminal.outputs["steps"] == steps
    retry = [e for e in event_log.of("c1") if e.reason_code is not None]
    assert [(e.stage, e.is_terminal) for e in retry] == [(STAGE_TRAINING, False)]
    assert "diverged" in retry[0].message and "new seed" in retry[0].message
    _, metadata = _read_lora(storage, terminal.outputs["lora"]["key"])
    assert metadata  # a whole file from the second run
    assert not any("lora" in name for name, _ in transformer.named_parameters())


def test_a_training_that_diverges_twice_fails_with_the_reason_not_retryable(
    runner, trainer, storage, event_log
):
    keys = store_photos(storage, 10)
    runner.run(make_job())
    transformer = runner.models[TINY_KEY].t2v.transformer
    hook = _poison_the_loss(transformer, calls=None, factor=float("nan"))
    try:
        terminal = trainer.run(training_job(keys), final_attempt=False)  # a retry would diverge again
    finally:
        hook.remove()

    assert (terminal.kind, terminal.reason_code, terminal.retryable) == ("failed", QUALITY_FAILED, False)
    assert "diverged twice" in terminal.message and "learning rate" in terminal.message
    assert event_log.of("c1")[-1] == terminal  # sent as terminal, not announced as a retry
    assert _files_under(storage, "characters/c1/lora") == []
    assert not any("lora" in name for name, _ in transformer.named_parameters())
    assert trainer.run(training_job(keys)).kind == "completed"  # the pipeline is clean after
