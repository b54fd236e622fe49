"""Prompt moderation's cost: folding a prompt and matching it against a term list of growing size, and
(with BENCH_CLASSIFIER=<transformers image-classification folder>) the image classifier per image.

    .venv/bin/python bench/moderation.py

No database: the terms are built in memory (`apps.moderation.services.terms_in` is what `prompt_check`
runs on the enabled rows). Prints microseconds per prompt for each list size; nothing is asserted.
"""

from __future__ import annotations

import os
import random
import string
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")

import django  # noqa: E402

django.setup()

from apps.moderation.models import BlockedTerm, Category  # noqa: E402
from apps.moderation.normalize import term_form  # noqa: E402
from apps.moderation.services import terms_in  # noqa: E402

PROMPTS = [
    "a woman dancing in the rain at night, neon lights, cinematic dolly in, 35 mm",
    "make it feel dramatic: slow motion, golden hour, a city street with wet asphalt and reflections",
    "a n u d 3 portrait on the beach",  # spelled out and leetspeak
    "ｆｕｌｌ ｗｉｄｔｈ text with Cyrillic lооk-alikes and áccénts " * 3,
]


def _terms(count: int) -> list[BlockedTerm]:
    rng = random.Random(0)
    terms = []
    for i in range(count):
        word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 10)))
        terms.append(
            BlockedTerm(
                term=word,
                normalized=term_form(word),
                category=Category.OTHER,
                locale="" if i % 3 else "en",
                match_anywhere=i % 10 == 0,
            )
        )
    return terms


def main() -> None:
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f}")
    for count in (100, 1_000, 5_000):
        terms = _terms(count)
        rounds = 200
        started = time.perf_counter()
        for _ in range(rounds):
            for prompt in PROMPTS:
                terms_in(prompt, terms, locales=["en-US"])
        per_prompt = (time.perf_counter() - started) / (rounds * len(PROMPTS))
        print(f"terms={count:>5}  {per_prompt * 1e6:8.1f} us per prompt")

    folder = os.environ.get("BENCH_CLASSIFIER")
    if folder:
        from PIL import Image

        from gpu_worker.contract import ModerationSpec
        from gpu_worker.moderation import Moderator

        root, name = Path(folder).parent, Path(folder).name
        moderator = Moderator(root)
        spec = ModerationSpec(model=name, thresholds={})
        images = [Image.new("RGB", (704, 1280), (i * 40, 90, 160)) for i in range(4)]
        moderator.check(spec, images[:1])  # load and warm up
        started = time.perf_counter()
        for _ in range(5):
            moderator.check(spec, images)
        per_image = (time.perf_counter() - started) / 20
        print(f"classifier {name}: {per_image * 1e3:.1f} ms per image (CPU, batches of 4)")


if __name__ == "__main__":
    main()
