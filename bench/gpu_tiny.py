"""Per-stage timings and peak memory of the tiny-wan route, through the real runner (CPU).

    .venv/bin/python bench/gpu_tiny.py

Each configuration (size x frames x mode) runs in its own process, so its peak RSS is its own: the
process imports torch and diffusers, builds the route (the "cold" job: model build included in `load`),
then runs BENCH_JOBS warm jobs (default 7) with new seeds. Stages are the runner's own timings (the ones
the `completed` event reports). The table shows, per stage, the best warm job (the least disturbed by
other processes: on a shared machine the median moves with their load), then the median and best total,
the process CPU seconds per warm job, the cold first job, the MP4 size and the peak RSS. Modes:
text-to-video, image-to-video from a selfie, text-to-video with a user's LoRA. Storage is a temporary
local folder.
"""

from __future__ import annotations

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

CONFIGS = [  # width, height, frames, steps
    (32, 32, 9, 4),
    (64, 64, 17, 4),
    (128, 128, 33, 4),
]
MODES = ("t2v", "i2v", "t2v+lora")
STAGES = ("load", "denoise", "decode", "encode", "quality", "upload", "total")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def one(width: int, height: int, frames: int, steps: int, mode: str, jobs: int) -> dict:
    """Runs in a child process; prints one JSON line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    import io

    import numpy as np
    import torch
    from PIL import Image

    import gpu_worker.pipelines.tiny_wan  # noqa: F401  (diffusers' Wan pipelines: imported once per process)
    from gpu_worker.contract import GenerationJob, RouteSpec
    from gpu_worker.runner import Runner
    from gpu_worker.storage import LocalStorage

    imported = time.perf_counter() - started
    rss_after_import = _peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        storage = LocalStorage(Path(tmp) / "media")
        route = RouteSpec(
            name="tiny-wan",
            family="tiny-wan",
            checkpoint="",
            width=max(64, width),
            height=max(64, height),
            fps=8,
            frames=max(17, frames),
            steps=steps,
            guidance=5.0,
            image_conditioning=True,
            lora_support=True,
        )
        image_key = lora_key = None
        if mode == "i2v":
            buffer = io.BytesIO()
            Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(
                buffer, "PNG"
            )
            storage.write("uploads/bench/selfie", buffer.getvalue(), content_type="image/png")
            image_key = "uploads/bench/selfie"
        if mode == "t2v+lora":
            from peft import LoraConfig
            from peft.utils import get_peft_model_state_dict
            from safetensors.torch import save

            from gpu_worker.pipelines.tiny_wan import build_transformer

            transformer = build_transformer(16)
            transformer.add_adapter(
                LoraConfig(
                    r=4,
                    lora_alpha=4,
                    init_lora_weights=False,
                    target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                )
            )
            state = {
                f"transformer.{k}": v.contiguous() for k, v in get_peft_model_state_dict(transformer).items()
            }
            storage.write(
                "characters/bench/lora.safetensors", save(state), content_type="application/octet-stream"
            )
            lora_key = "characters/bench/lora.safetensors"

        events = []
        runner = Runner(storage=storage, sink=events.append, model_root=Path(tmp), device="cpu")
        results = []
        cpu_warm = 0.0
        for i in range(jobs + 1):
            if i == 1:
                cpu_start = sum(os.times()[:2])
            job = GenerationJob(
                job_id=f"bench-{i}",
                route=route,
                prompt="a woman smiling at the camera, golden hour, cinematic dolly in",
                negative_prompt="blurry, low quality",
                seed=i,
                aspect_ratio="1:1",
                width=width,
                height=height,
                num_frames=frames,
                output_prefix=f"generations/bench-{i}",
                image_key=image_key,
                lora_key=lora_key,
            )
            event = runner.run(job)
            if event.kind != "completed":
                raise SystemExit(f"job failed: {event}")
            results.append(event.timings | {"bytes": event.outputs["video"]["bytes"]})
        cpu_warm = sum(os.times()[:2]) - cpu_start
    return {
        "config": [width, height, frames, steps, mode],
        "torch_threads": torch.get_num_threads(),
        "import_s": imported,
        "rss_after_import_mb": rss_after_import,
        "peak_rss_mb": _peak_rss_mb(),
        "cold": results[0],
        "cpu_per_warm_job_s": cpu_warm / jobs,
        "warm": results[1:],
    }


def main() -> None:
    from _stack import describe_machine

    jobs = int(os.environ.get("BENCH_JOBS", "7"))
    print(f"tiny-wan route through gpu_worker.runner, CPU only; {describe_machine()}; {jobs} warm jobs each")
    print("seconds; per stage: best warm job; cold = first job of the process (model build in its load)\n")
    header = f"{'size':>13} {'mode':>9} | " + " ".join(f"{s:>7}" for s in STAGES[:-1])
    header += f" | {'total p50':>9} {'best':>6} {'CPU/job':>7} | {'cold':>6} | {'MP4 KB':>6} {'RSS MB':>6}"
    print(header)
    print("-" * len(header))
    for width, height, frames, steps in CONFIGS:
        for mode in MODES:
            output = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    str(width),
                    str(height),
                    str(frames),
                    str(steps),
                    mode,
                    str(jobs),
                ],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            ).stdout
            data = json.loads(output.strip().splitlines()[-1])
            warm = data["warm"]
            best = [min(job[stage] for job in warm) for stage in STAGES[:-1]]
            totals = [job["total"] for job in warm]
            size = f"{width}x{height}x{frames}"
            print(
                f"{size:>13} {mode:>9} | "
                + " ".join(f"{value:7.3f}" for value in best)
                + f" | {median(totals):9.3f} {min(totals):6.3f} {data['cpu_per_warm_job_s']:7.3f}"
                + f" | {data['cold']['total']:6.3f}"
                + f" | {median(j['bytes'] for j in warm) / 1024:6.1f} {data['peak_rss_mb']:6.0f}"
            )
    print(
        f"\n(import of torch + diffusers + gpu_worker in the last process: {data['import_s']:.1f} s; "
        f"RSS after import {data['rss_after_import_mb']:.0f} MB; torch threads {data['torch_threads']})"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        w, h, f, s, mode, jobs = sys.argv[2:8]
        print(json.dumps(one(int(w), int(h), int(f), int(s), mode, int(jobs))))
    else:
        main()
