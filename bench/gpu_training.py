"""Soul ID training time for 15 photos, through the real trainer (gpu_worker/training.py).

    .venv/bin/python bench/gpu_training.py                          # tiny-wan route on the CPU
    MODEL_ROOT=/models .venv/bin/python bench/gpu_training.py --real Wan2.2-TI2V-5B-Diffusers   # on CUDA

Each configuration runs in its own process, so its peak RSS is its own: the process imports torch and
diffusers, writes 15 synthetic face photos (skin-coloured ovals with eyes, mouth and hair, varied in
place, light and background) to a temporary local storage, then runs one cold training (the model build
included in `load`) and BENCH_RUNS warm ones (default 3) on the cached model. Printed per configuration:
the warm runs' best seconds per step and median total, the stage timings of the best warm run (the
trainer's own, as the `completed` event reports them), the cold total, the final loss, the LoRA file size
and the peak RSS (and, on CUDA, the peak GPU memory).

BENCH_TORCH_THREADS sets torch's intra-op threads in the measured processes (default: torch's own, one per
core). On a small shared CPU it matters more than anything else here: the tiny model's steps are a few
milliseconds of work, and when another process takes one of the cores, OpenMP's waits at every operator
make two threads slower than one by an order of magnitude (measure both: `BENCH_TORCH_THREADS=1`).

`--real CHECKPOINT` trains the wan22 family's suggested settings (contract.training_defaults: rank 32,
512 px, batch 1; BENCH_STEPS steps, default 50, to time a step rather than a whole training) on a Wan 2.2
TI2V-5B diffusers folder under MODEL_ROOT, on GPU_DEVICE (cuda). Not run on the development machines:
they have no GPU.
"""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PHOTOS = 15
CONFIGS = [  # resolution, batch size, steps, rank
    (32, 1, 30, 4),
    (32, 2, 30, 4),  # the tiny-wan defaults
    (32, 2, 200, 4),
    (64, 2, 100, 8),
]
STAGES = ("prepare", "load", "encode", "train", "save", "upload")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def face_photo(seed: int, size: int) -> bytes:
    import numpy as np
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


def one(resolution: int, batch: int, steps: int, rank: int, runs: int, real: str) -> dict:
    """Runs in a child process; prints one JSON line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    import torch

    if os.environ.get("BENCH_TORCH_THREADS"):
        torch.set_num_threads(int(os.environ["BENCH_TORCH_THREADS"]))
    from gpu_worker.contract import RouteSpec, TrainingJob, training_defaults
    from gpu_worker.runner import Runner
    from gpu_worker.settings import WorkerSettings
    from gpu_worker.storage import LocalStorage
    from gpu_worker.training import Trainer

    imported = time.perf_counter() - started
    settings = WorkerSettings.from_env()
    if real:
        route = RouteSpec(
            name="wan22-ti2v-5b",
            family="wan22",
            checkpoint=real,
            width=1280,
            height=704,
            fps=24,
            frames=121,
            steps=50,
            guidance=5.0,
            image_conditioning=True,
            lora_support=True,
        )
        device = settings.device
    else:
        route = RouteSpec(
            name="tiny-wan",
            family="tiny-wan",
            checkpoint="",
            width=64,
            height=64,
            fps=8,
            frames=17,
            steps=4,
            guidance=5.0,
            image_conditioning=True,
            lora_support=True,
        )
        device = "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        storage = LocalStorage(Path(tmp) / "media")
        keys = []
        for i in range(PHOTOS):
            key = f"characters/bench/crops/{i:02d}.png"
            storage.write(key, face_photo(i, max(32, resolution)), content_type="image/png")
            keys.append(key)
        events = []
        runner = Runner(storage=storage, sink=events.append, model_root=settings.model_root, device=device)
        trainer = Trainer(runner)
        results = []
        for i in range(runs + 1):
            job = TrainingJob(
                job_id="bench",
                route=route,
                photo_keys=keys,
                output_prefix=f"characters/bench/lora/{i}",
                seed=i,
                **{
                    **training_defaults(route.family),
                    "steps": steps,
                    "rank": rank,
                    "resolution": resolution,
                    "batch_size": batch,
                },
            )
            event = trainer.run(job)
            if event.kind != "completed":
                raise SystemExit(f"training failed: {event}")
            results.append(
                event.timings
                | {"bytes": event.outputs["lora"]["bytes"], "final_loss": event.outputs["final_loss"]}
            )
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {
        "torch_threads": torch.get_num_threads(),
        "import_s": imported,
        "peak_rss_mb": _peak_rss_mb(),
        "gpu_peak_mb": gpu_peak,
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "cold": results[0],
        "warm": results[1:],
    }


def main() -> None:
    from _stack import describe_machine

    real = ""
    if len(sys.argv) > 2 and sys.argv[1] == "--real":
        real = sys.argv[2]
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    configs = CONFIGS
    if real:
        steps = int(os.environ.get("BENCH_STEPS", "50"))
        configs = [(512, 1, steps, 32)]
        runs = int(os.environ.get("BENCH_RUNS", "1"))
    route = f"wan22 ({real})" if real else "tiny-wan route, CPU only"
    print(f"Soul ID training of {PHOTOS} photos through gpu_worker.training, {route}; {describe_machine()}")
    print(f"{runs} warm runs each after a cold one; seconds; stages of the best warm run\n")
    header = (
        f"{'res':>4} {'batch':>5} {'steps':>5} {'rank':>4} | {'s/step':>7} {'total p50':>9} | "
        + " ".join(f"{s:>7}" for s in STAGES)
        + f" | {'cold':>6} | {'loss':>6} {'LoRA KB':>8} {'RSS MB':>6}"
    )
    print(header)
    print("-" * len(header))
    data = {}
    for resolution, batch, steps, rank in configs:
        args = [str(v) for v in (resolution, batch, steps, rank, runs)]
        output = subprocess.run(
            [sys.executable, __file__, "--one", *args, real],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
        data = json.loads(output.strip().splitlines()[-1])
        warm = data["warm"]
        best = min(warm, key=lambda run: run["seconds_per_step"])
        print(
            f"{resolution:>4} {batch:>5} {steps:>5} {rank:>4} | {best['seconds_per_step']:7.4f} "
            f"{median(run['total'] for run in warm):9.3f} | "
            + " ".join(f"{best[stage]:7.3f}" for stage in STAGES)
            + f" | {data['cold']['total']:6.2f} | {best['final_loss']:6.3f} {best['bytes'] / 1024:8.1f}"
            f" {data['peak_rss_mb']:6.0f}"
        )
    extra = f"; peak GPU memory {data['gpu_peak_mb']:.0f} MiB" if data.get("gpu_peak_mb") else ""
    print(
        f"\n(device {data['device']}; import of torch + diffusers + gpu_worker in the last process: "
        f"{data['import_s']:.1f} s; torch threads {data['torch_threads']}{extra})"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        resolution, batch, steps, rank, runs = (int(v) for v in sys.argv[2:7])
        real = sys.argv[7] if len(sys.argv) > 7 else ""
        print(json.dumps(one(resolution, batch, steps, rank, runs, real)))
    else:
        main()
