"""The cost of each quality tier per shipped route, and seconds per tier for tiny-wan on this machine.

    .venv/bin/python bench/tiers.py               # the table, then tiny-wan's seconds per tier
    BENCH_JOBS=0 .venv/bin/python bench/tiers.py  # the table only (BENCH_JOBS: warm jobs per tier, 3)

1. For every route in apps/generations/shipped.py and every tier it offers (and the ones it defines but
   does not offer, in brackets): the job size of a 5-second 9:16 clip at that tier (the backend's rule:
   contract.output_size / frames_for_duration on the tier's render profile), the steps ("8+4": a refine
   pass of 4 after 8), the latent tokens (contract.latent_tokens) and the cost, all steps x latent tokens,
   also as a share of STANDARD's; and the
   render price in credits of a 5 s and an 8 s clip (apps/generations/pricing.py: the cost at the tier's
   landscape size, times the route's credits_per_million_cost, half up; before the trend's minimum, price
   rules and the ECONOMY discount; "-" where the model does not take that length).
2. tiny-wan runs each tier through the real runner (gpu_worker.runner, CPU): one cold job (model build
   included), then BENCH_JOBS warm jobs with new seeds; printed: the median and best warm total, denoise and
   seconds per step, from the completed events' timings. No Django, no database: the contract and the
   runner only. The figures depend on the machine and its load: quote them with its cores.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gpu_worker.contract as contract  # noqa: E402
from apps.generations.shipped import SHIPPED_ROUTES  # noqa: E402  (plain data, no Django)

ASPECT = "9:16"
SECONDS = 5


def route_spec(row: dict) -> contract.RouteSpec:
    return contract.RouteSpec(
        name=row["name"],
        family=row["family"],
        checkpoint=row["checkpoint"],
        width=row["width"],
        height=row["height"],
        fps=row["fps"],
        frames=row["frames"],
        steps=row["steps"],
        guidance=float(row["guidance"]),
        image_conditioning=row["image_conditioning"],
        lora_support=row["lora_support"],
        speed_profile=dict(row.get("speed_profile") or {}),
        scheduler=dict(row.get("scheduler") or {}),
    )


def job_size(row: dict, profile: contract.RenderProfile) -> tuple[int, int, int]:
    rules = contract.FAMILIES[row["family"]]
    width, height = contract.output_size(
        ASPECT, native_width=profile.width, native_height=profile.height, size_multiple=rules.size_multiple
    )
    frames = contract.frames_for_duration(SECONDS, fps=profile.fps, frame_multiple=rules.frame_multiple)
    return width, height, frames


def render_credits(row: dict, profile: contract.RenderProfile, seconds: int) -> str:
    """The render price of a clip (apps/generations/pricing.py's price_compute, on the shipped data)."""
    rules = contract.FAMILIES[row["family"]]
    frames = contract.frames_for_duration(seconds, fps=profile.fps, frame_multiple=rules.frame_multiple)
    if frames > profile.max_frames:
        return "-"
    cost = Decimal(profile.clip_cost(row["family"], num_frames=frames))
    price = cost * row["credits_per_million_cost"] / 1_000_000
    return str(int(price.quantize(Decimal(1), rounding=ROUND_HALF_UP)))


def cost_table() -> None:
    print(
        f"Cost per tier: a {SECONDS} s {ASPECT} clip; cost = steps x latent tokens "
        "([tier]: defined, not offered)"
    )
    header = (
        f"{'route':<16} {'tier':<10} {'size':>11} {'frames':>6} {'steps':>5} {'tokens':>8} {'cost':>11} "
        f"{'vs STD':>7} {'5s cr':>5} {'8s cr':>5}  speed-ups"
    )
    print(header)
    print("-" * len(header))
    for row in SHIPPED_ROUTES:
        profiles = {
            tier: contract.RenderProfile.from_dict(row["render_profiles"][tier]) for tier in contract.TIERS
        }
        costs = {}
        for tier, profile in profiles.items():
            width, height, frames = job_size(row, profile)
            tokens = contract.latent_tokens(row["family"], width=width, height=height, num_frames=frames)
            steps = f"{profile.steps}+{profile.refine_steps}" if profile.refine_steps else str(profile.steps)
            costs[tier] = (width, height, frames, steps, tokens, profile.all_steps * tokens)
        standard = costs[contract.TIER_STANDARD][5]
        for tier, (width, height, frames, steps, tokens, cost) in costs.items():
            spec = contract.route_for_tier(route_spec(row), profiles[tier])
            speedups = spec.speedups
            applied = [
                name
                for name, on in (
                    ("compile", speedups.compile_blocks),
                    ("tf32", speedups.tf32),
                    (f"cache={speedups.cache}", speedups.cache),
                    ("vae-bf16", speedups.vae_decode_dtype == "bfloat16"),
                    ("vae-tiling", speedups.vae_tiling),
                )
                if on
            ]
            label = tier if tier in row["quality_tiers"] else f"[{tier}]"
            print(
                f"{row['name']:<16} {label:<10} {f'{width}x{height}':>11} {frames:>6} {steps:>5} {tokens:>8} "
                f"{cost:>11,} {cost / standard:>6.2f}x {render_credits(row, profiles[tier], 5):>5} "
                f"{render_credits(row, profiles[tier], 8):>5}  {', '.join(applied) or '-'}"
            )


def tiny_timings(jobs: int) -> None:
    import torch

    from gpu_worker.runner import Runner
    from gpu_worker.storage import LocalStorage

    row = next(r for r in SHIPPED_ROUTES if r["name"] == "tiny-wan")
    native = route_spec(row)
    print()
    print(
        f"tiny-wan on this machine (CPU, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores): "
        f"{SECONDS} s {ASPECT}, 1 cold + {jobs} warm jobs per tier"
    )
    header = (
        f"{'tier':<10} {'size':>9} {'frames':>6} {'steps':>5} {'cold s':>7} {'warm s (median/best)':>21} "
        f"{'denoise s':>9} {'s/step':>7}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        storage = LocalStorage(Path(tmp) / "media")
        runner = Runner(storage=storage, sink=lambda event: None, model_root=Path(tmp), device="cpu")
        for tier in contract.TIERS:
            profile = contract.RenderProfile.from_dict(row["render_profiles"][tier])
            route = contract.route_for_tier(native, profile)
            width, height, frames = job_size(row, profile)
            timings = []
            for i in range(jobs + 1):
                job = contract.GenerationJob(
                    job_id=f"bench-{tier.lower()}-{i}",
                    route=route,
                    prompt="a woman smiling at the camera, golden hour, cinematic dolly in",
                    negative_prompt="blurry, low quality",
                    seed=i,
                    aspect_ratio=ASPECT,
                    width=width,
                    height=height,
                    num_frames=frames,
                    output_prefix=f"generations/bench/{tier.lower()}-{i}",
                    tier=tier,
                )
                started = time.perf_counter()
                event = runner.run(job)
                if event.kind != "completed":
                    raise SystemExit(f"{tier}: job failed: {event.reason_code} {event.message}")
                timings.append(event.timings | {"wall": time.perf_counter() - started})
            cold, warm = timings[0], timings[1:] or timings[:1]
            totals = [t["total"] for t in warm]
            print(
                f"{tier:<10} {f'{width}x{height}':>9} {frames:>6} {profile.all_steps:>5} "
                f"{cold['total']:>7.2f} "
                f"{f'{median(totals):.2f} / {min(totals):.2f}':>21} "
                f"{median(t['denoise'] for t in warm):>9.3f} "
                f"{median(t['seconds_per_step'] for t in warm):>7.3f}"
            )


def main() -> None:
    cost_table()
    jobs = int(os.environ.get("BENCH_JOBS", "3"))
    if jobs > 0:
        tiny_timings(jobs)


if __name__ == "__main__":
    main()
