"""Soul ID photo checks per second per core, on 1, 3, 6 and 12 MP photos (apps/characters/photo_checks.py).

    .venv/bin/python bench/photo_checks.py    # about 2 minutes (BENCH_SECONDS=2 per cell, BENCH_FORMATS)

One process, one thread: OpenCV is held to one thread (`cv2.setNumThreads(1)`) and so is libheif's
decoder, so the CPU time per check is one core's work. The photos are the astronaut portrait cropped to
4:3 and upscaled (fixtures/photos/make_photos.py), with mild sensor-like noise added so that the files are
as hard to decode as real photos of their size (an upscaled, smooth picture compresses and decodes far
faster than a camera's). Every check is the full verdict: the one safe decode (`decode_image`; a JPEG at
reduced DCT scale), EXIF orientation, face detection and measurements, and the clean JPEG plus the 512 px
face crop.

Printed per size and format: file size, the median wall time per check, the CPU time per check and
checks/s/core (1 / CPU time). Also the same photo through `inspect_image` alone (the upload check that
decodes every pixel once, at full size), to show what a full decode costs. On a shared machine, take CPU
time per check as the figure; wall time moves with other processes' load. Then, for the photos in
BENCH_BREAKDOWN (default `12:JPEG`), where a check's CPU goes by stage (cProfile on the CPU clock), and
for a JPEG the parts no change around them can cut, each measured alone (`floors`).
"""

from __future__ import annotations

import cProfile
import importlib.util
import os
import pstats
import sys
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pillow_heif  # noqa: E402

from apps.characters.photo_checks import (  # noqa: E402
    PhotoRules,
    _draft_long_side,
    _find_faces,
    _jpeg,
    _upright,
    check_photo,
)
from apps.storage.images import CONTENT_TYPES, decode_image, inspect_image  # noqa: E402

_spec = importlib.util.spec_from_file_location("make_photos", ROOT / "fixtures" / "photos" / "make_photos.py")
make_photos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_photos)

SIZES = make_photos.BENCH_SIZES
SECONDS = float(os.environ.get("BENCH_SECONDS", "2"))
# A noisy 12 MP PNG is about 17 MB, over the 15 MB upload cap: the benchmark lifts the byte cap.
RULES = PhotoRules(max_bytes=64 * 1024 * 1024)
FORMATS = os.environ.get("BENCH_FORMATS", "JPEG,HEIF,WEBP,PNG").split(",")
# Where a check's CPU goes, for these photos (megapixels:format, comma-separated; "" for none).
BREAKDOWN = [item.split(":") for item in os.environ.get("BENCH_BREAKDOWN", "12:JPEG").split(",") if item]
# cProfile's own time of the C calls that do a check's work, by stage (the rest is Python and numpy).
ENCODES, COPIES = "encodes (clean JPEG + crop)", "colour, grey, CLAHE, copies"
STAGES = {
    "face detection (Haar cascades)": ("detectMultiScale2",),
    "decode (libjpeg, libheif, ...)": ("of 'ImagingDecoder' objects",),
    ENCODES: ("of 'ImagingEncoder' objects",),
    "resizes (OpenCV)": ("<resize>",),
    COPIES: ("of 'ImagingCore' objects", "PIL._imaging", "cv2.CLAHE", "fromarray", "of 'bytes' objects"),
}


def measure(run) -> tuple[float, float, int]:
    """(median wall ms, CPU ms per call, calls) over about SECONDS, after one warm-up call."""
    run()
    walls: list[float] = []
    cpu_start, deadline = time.process_time(), time.perf_counter() + SECONDS
    while time.perf_counter() < deadline or len(walls) < 3:
        start = time.perf_counter()
        run()
        walls.append((time.perf_counter() - start) * 1000)
    cpu_ms = (time.process_time() - cpu_start) * 1000 / len(walls)
    return median(walls), cpu_ms, len(walls)


def breakdown(data: bytes, calls: int = 10) -> dict[str, float]:
    """CPU ms per check by stage (STAGES), from cProfile timed with the process's CPU clock."""
    check_photo(data, rules=RULES)
    profile = cProfile.Profile(time.process_time)
    start = time.process_time()
    profile.runcall(lambda: [check_photo(data, rules=RULES) for _ in range(calls)])
    total = (time.process_time() - start) * 1000 / calls
    stages = dict.fromkeys(STAGES, 0.0)
    for (_file, _line, function), (_cc, _nc, own, _cum, callers) in pstats.Stats(profile).stats.items():
        for stage, needles in STAGES.items():
            if any(needle in function for needle in needles):
                if stage == ENCODES:  # Pillow's raw encoder packing pixels for numpy is a copy, not an encode
                    copied = sum(c[2] for (_f, _l, name), c in callers.items() if name == "tobytes")
                    stages[COPIES] += copied * 1000 / calls
                    own -= copied
                stages[stage] += own * 1000 / calls
                break
    stages["the rest (Python, numpy, measurements)"] = total - sum(stages.values())
    stages["total"] = total
    return stages


def floors(data: bytes) -> dict[str, float]:
    """CPU ms of the parts of a check that no change around them can cut: the JPEG decoded at the smallest
    DCT scale (1/8: libjpeg still reads and entropy-decodes every byte, which is most of a decode), the
    face detection alone on the check's own grey pixels (the cascades' scans that the verdict's definition
    requires: `_DETECT_SIDE`, `_SCALE_FACTOR`, windows down to the sizes that can make a second face), and
    the two encodes of an accepted photo's outputs."""
    content_type = CONTENT_TYPES["JPEG"]
    _, smallest, _ = measure(
        lambda: decode_image(
            data, declared_content_type=content_type, max_pixels=RULES.max_pixels, draft_long_side=1
        )
    )
    facts, image = decode_image(
        data,
        declared_content_type=content_type,
        max_pixels=RULES.max_pixels,
        draft_long_side=_draft_long_side(RULES),
    )
    picture = _upright(image, long_side=max(facts.width, facts.height), rules=RULES)
    grey = np.asarray(picture.convert("L"))
    _, detection, _ = measure(lambda: _find_faces(grey, second_face_ratio=RULES.second_face_ratio))
    _, encodes, _ = measure(lambda: _jpeg(picture, quality=RULES.output_quality))
    return {
        "decode at 1/8 scale (entropy decoding)": smallest,
        "face detection alone": detection,
        "the clean JPEG's encode": encodes,
        "sum": smallest + detection + encodes,
    }


def main() -> None:
    cv2.setNumThreads(1)
    pillow_heif.options.DECODE_THREADS = 1
    print(f"photo checks, one process, one thread; {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    header = f"{'size':>6} {'format':<5} {'file':>8} {'wall ms':>8} {'cpu ms':>7} {'checks/s/core':>14}"
    print(f"{header} {'inspect_image cpu ms':>21}")
    for megapixels in SIZES:
        for image_format in FORMATS:
            data = make_photos.noisy_photo(megapixels, image_format)
            verdict = check_photo(data, rules=RULES)
            assert verdict.accepted, (megapixels, image_format, verdict)
            wall, cpu, _ = measure(lambda data=data: check_photo(data, rules=RULES))
            content_type = CONTENT_TYPES[image_format]
            _, inspect_cpu, _ = measure(
                lambda data=data, ct=content_type: inspect_image(
                    data, declared_content_type=ct, max_pixels=40_000_000
                )
            )
            print(
                f"{megapixels:>4}MP {image_format:<5} {len(data) / 1024:>6.0f}KB {wall:>8.1f} {cpu:>7.1f} "
                f"{1000 / cpu:>14.1f} {inspect_cpu:>21.1f}"
            )
    for megapixels, image_format in BREAKDOWN:
        print(f"where a check's CPU goes, {megapixels} MP {image_format} (cProfile, ms per check):")
        data = make_photos.noisy_photo(int(megapixels), image_format)
        for stage, ms in breakdown(data).items():
            print(f"  {stage:<40} {ms:>7.1f}")
        if image_format == "JPEG":
            print(
                f"what no change around them can cut, {megapixels} MP {image_format} "
                "(CPU ms, each measured alone):"
            )
            for part, ms in floors(data).items():
                print(f"  {part:<40} {ms:>7.1f}")


if __name__ == "__main__":
    main()
