"""What the AI label adds to a video's CPU tail: C2PA signing (gpu_worker/content_credentials.py) and the
visible watermark (gpu_worker/watermark.py), per clip, at the sizes the tiers deliver.

    OMP_NUM_THREADS=1 .venv/bin/python bench/c2pa_label.py      # about a minute (BENCH_REPEATS=7)

Each clip is encoded once as the worker encodes it (H.264 High, CRF 18, faststart): a moving gradient with
mild noise, so the file is about as large as a real clip of its size. Signing then runs BENCH_REPEATS
times on a fresh copy, with a development chain (ES256, no timestamp authority: a TSA adds a network
round trip per video, not measured here). Printed per clip: the MP4's size, its encode time (for scale),
the median wall and CPU time of signing (the manifest is built, the file's boxes hashed, the signed file
written beside it and renamed), the bytes the manifest adds, and the watermark's median time per clip.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from gpu_worker import video  # noqa: E402
from gpu_worker.content_credentials import ContentCredentials, make_signing_material, read_label  # noqa: E402
from gpu_worker.watermark import burn_watermark  # noqa: E402

REPEATS = int(os.environ.get("BENCH_REPEATS", "7"))
# (name, width, height, frames, fps): tiny-wan's embedded clip, Wan 2.2 DRAFT and STANDARD at 5 s.
CLIPS = [
    ("tiny-wan 64x64, 41 frames", 64, 64, 41, 8),
    ("DRAFT 640x352, 121 frames", 640, 352, 121, 24),
    ("STANDARD 1280x704, 121 frames", 1280, 704, 121, 24),
]


def frames(width: int, height: int, count: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((count, height, width, 3), dtype=np.uint8)
    for t in range(count):
        base = 128 + 90 * np.sin((x + 4 * t) / 37.0) * np.cos((y - 2 * t) / 29.0)
        noisy = base[..., None] + rng.normal(0, 6, (height, width, 3)) + np.array([0, 20, -20])
        out[t] = np.clip(noisy, 0, 255).astype(np.uint8)
    return out


def timed(call) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    chain = make_signing_material(organization="Diffuse bench")
    labeller = ContentCredentials(chain.material, producer="Diffuse")
    print(f"c2pa signing, {REPEATS} runs per clip; {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print(
        f"{'clip':32} {'MP4 MB':>7} {'encode s':>9} {'sign ms (median)':>17} {'sign cpu ms':>12} "
        f"{'+bytes':>7} {'mark ms':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, width, height, count, fps in CLIPS:
            clip = frames(width, height, count)
            source = folder / "source.mp4"
            encode_s, _ = timed(
                lambda clip=clip, source=source, fps=fps: video.encode_mp4(clip, source, fps=fps)
            )
            walls, cpus = [], []
            for _ in range(REPEATS):
                target = folder / "video.mp4"
                shutil.copyfile(source, target)
                wall, cpu = timed(
                    lambda target=target: labeller.sign_mp4(target, route="bench", family="wan")
                )
                walls.append(wall)
                cpus.append(cpu)
            label = read_label(target, trust_anchors_pem=chain.root_pem)
            assert label is not None and label.validation_state == "Trusted", label
            added = target.stat().st_size - source.stat().st_size
            marks = [timed(lambda clip=clip: burn_watermark(clip, "AI generated"))[0] for _ in range(REPEATS)]
            print(
                f"{name:32} {source.stat().st_size / 1e6:7.2f} {encode_s:9.2f} {median(walls) * 1000:17.1f} "
                f"{median(cpus) * 1000:12.1f} {added:7d} {median(marks) * 1000:8.1f}"
            )


if __name__ == "__main__":
    main()
