"""The model routes the project ships (created by migration 0002; `manage.py load_model_routes` puts
back any that are missing without touching the ones staff edited).

- `tiny-wan`: random weights built from configs, on the CPU: tests and the embedded `make run`. Its
  output is coloured noise with motion; never route real users to it.
- `wan2.2-ti2v-5b`: Wan 2.2 TI2V-5B from MODEL_ROOT on CUDA (every tier), falling back to
- `ltx-video`: LTX-Video 0.9.7 distilled (draft and standard tiers).

Each route renders each tier with its `render_profiles` (gpu_worker.contract.RenderProfile): DRAFT is the
same model smaller and with fewer steps, STANDARD the native settings, CINEMA more steps without a step
cache. Clips stay within what each model was trained on (`max_frames`: Wan 2.2 TI2V-5B 121 frames, 5 s at
24 fps; LTX-Video up to 257 frames, held here to the worker's 2x native).

The CUDA routes are enabled, but only GPU workers that hold the weights can run them; a worker without
them reports MODEL_UNAVAILABLE (retryable), so the job is retried, then sent to the fallback route.
"""

from __future__ import annotations

from decimal import Decimal

SHIPPED_ROUTES: tuple[dict, ...] = (
    {
        "name": "tiny-wan",
        "description": "Random-weight Wan-shaped pipeline on the CPU (tests, embedded run).",
        "family": "tiny-wan",
        "checkpoint": "",
        "device": "cpu",
        "width": 64,
        "height": 64,
        "fps": 8,
        "frames": 41,
        "steps": 4,
        "guidance": 5.0,
        "image_conditioning": True,
        "lora_support": True,
        "quality_tiers": ["DRAFT", "STANDARD", "CINEMA"],
        "lanes": ["INSTANT", "ECONOMY"],
        "cost_per_second": Decimal("0"),
        # A 5 s STANDARD clip (704 step-tokens) at 4 credits, DRAFT 1, CINEMA 8, 8 s STANDARD 6.
        "credits_per_million_cost": Decimal("5700"),
        "seconds_per_step": 0.05,
        "overhead_seconds": 1.0,
        # DRAFT a quarter of the pixels and half the steps; CINEMA twice the steps and a refine pass of 4
        # more over the first pass's latents (half the schedule's tail; 8 fps throughout).
        "render_profiles": {
            "DRAFT": {"width": 32, "height": 32, "fps": 8, "max_frames": 81, "steps": 2, "guidance": 5.0},
            "STANDARD": {"width": 64, "height": 64, "fps": 8, "max_frames": 81, "steps": 4, "guidance": 5.0},
            "CINEMA": {
                "width": 64,
                "height": 64,
                "fps": 8,
                "max_frames": 81,
                "steps": 8,
                "guidance": 5.0,
                "refine_steps": 4,
                "refine_strength": 0.5,
            },
        },
        "enabled": True,
        "fallback": None,
    },
    {
        "name": "ltx-video",
        "description": (
            "LTX-Video 0.9.7 distilled, its recipe (8 timesteps, guidance 1.0, rescale 0.7); two stages if "
            "its folder has latent_upsampler/, else one. LTXV Open Weights License: commercial use capped by "
            "revenue."
        ),
        "family": "ltx",
        "checkpoint": "LTX-Video-0.9.7-distilled",
        "device": "cuda",
        "width": 1216,
        "height": 704,
        "fps": 24,
        "frames": 121,
        "steps": 8,
        "guidance": 1.0,
        "image_conditioning": True,
        "lora_support": True,
        "quality_tiers": ["DRAFT", "STANDARD"],
        "lanes": ["INSTANT", "ECONOMY"],
        "cost_per_second": Decimal("0.0100"),
        # A 5 s STANDARD clip (107,008 step-tokens) at 4 credits, DRAFT (768x448) 2, 10 s 8.
        "credits_per_million_cost": Decimal("40"),
        "seconds_per_step": 0.5,
        "overhead_seconds": 8.0,
        # The distilled recipe is 8 given timesteps at guidance 1.0 at every size (the worker refuses
        # others): its DRAFT is smaller only (768x448, 40% of the pixels). No CINEMA on a distilled model.
        "render_profiles": {
            "DRAFT": {"width": 768, "height": 448, "fps": 24, "max_frames": 241, "steps": 8, "guidance": 1.0},
            "STANDARD": {
                "width": 1216,
                "height": 704,
                "fps": 24,
                "max_frames": 241,
                "steps": 8,
                "guidance": 1.0,
            },
            "CINEMA": {
                "width": 1216,
                "height": 704,
                "fps": 24,
                "max_frames": 241,
                "steps": 8,
                "guidance": 1.0,
            },
        },
        "enabled": True,
        "fallback": None,
    },
    {
        "name": "wan2.2-ti2v-5b",
        "description": "Wan 2.2 TI2V-5B (WanPipeline / WanImageToVideoPipeline, expand_timesteps).",
        "family": "wan22",
        "checkpoint": "Wan2.2-TI2V-5B-Diffusers",
        "device": "cuda",
        "width": 1280,
        "height": 704,
        "fps": 24,
        "frames": 121,
        "steps": 50,
        "guidance": 5.0,
        "image_conditioning": True,
        "lora_support": True,
        "quality_tiers": ["DRAFT", "STANDARD", "CINEMA"],
        "lanes": ["INSTANT", "ECONOMY"],
        "cost_per_second": Decimal("0.0500"),
        # A 5 s STANDARD clip (1,364,000 step-tokens) at 4 credits, CINEMA (70 steps) 6, DRAFT 0.4.
        "credits_per_million_cost": Decimal("3"),
        "seconds_per_step": 4.0,
        "overhead_seconds": 20.0,
        # Measured on an H200 at 1280x704x121 (bench/gpu_real.py): compiled blocks 1.29x per step (about
        # 13 s of compile once per shape), TF32, and the VAE decoder in bf16 (decode 9.4 s -> 6.1 s, 51 dB
        # against the float32 decode; the encoder of the selfie stays float32). Step caches (TaylorSeer
        # 3.9x per step with compile) stay off until checked on the real weights.
        "speed_profile": {"compile_blocks": True, "tf32": True, "vae_decode_dtype": "bfloat16"},
        # Trained on 121 frames (5 s at 24 fps): no longer clip at any tier. DRAFT: 640x352 (a quarter of
        # the pixels), 20 steps, the flow shift Wan uses at 480p (3.0) and TaylorSeer on top of the route's
        # speed-ups (a lossy cache is fine for a preview; 3.9x per step with compile on an H200); about
        # 1/10 of STANDARD's cost. CINEMA: 70 steps, no cache.
        "render_profiles": {
            "DRAFT": {
                "width": 640,
                "height": 352,
                "fps": 24,
                "max_frames": 121,
                "steps": 20,
                "guidance": 5.0,
                "scheduler": {"class": "UniPCMultistepScheduler", "config": {"flow_shift": 3.0}},
                "speed_profile": {
                    "compile_blocks": True,
                    "tf32": True,
                    "vae_decode_dtype": "bfloat16",
                    "cache": "taylorseer",
                    "cache_params": {"cache_interval": 4, "disable_cache_before_step": 3},
                },
            },
            "STANDARD": {
                "width": 1280,
                "height": 704,
                "fps": 24,
                "max_frames": 121,
                "steps": 50,
                "guidance": 5.0,
            },
            "CINEMA": {
                "width": 1280,
                "height": 704,
                "fps": 24,
                "max_frames": 121,
                "steps": 70,
                "guidance": 5.0,
            },
        },
        "enabled": True,
        "fallback": "ltx-video",
    },
)

SHIPPED_ROUTE_NAMES = tuple(route["name"] for route in SHIPPED_ROUTES)


def routes_ensure_shipped(model_route) -> int:
    """Creates the shipped routes that are missing (by name); returns how many it created.

    `model_route` is the ModelRoute class (a migration passes its historical model)."""
    created: list[str] = []
    for row in SHIPPED_ROUTES:
        if model_route.objects.filter(name=row["name"]).exists():
            continue
        model_route.objects.create(**{key: value for key, value in row.items() if key != "fallback"})
        created.append(row["name"])
    for row in SHIPPED_ROUTES:
        if row["name"] in created and row["fallback"]:
            fallback = model_route.objects.filter(name=row["fallback"]).first()
            model_route.objects.filter(name=row["name"]).update(fallback=fallback)
    return len(created)
