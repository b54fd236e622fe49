"""Summarizes py-spy's collapsed stacks (`py-spy record --format raw`, or a benchmark's BENCH_PYSPY files):
the share of samples per module and per function by own time, and per function including callees.

    .venv/bin/python bench/stacks.py FILE [OWN_ROWS] [INCLUSIVE_ROWS]
"""

from __future__ import annotations

import re
import sys
from collections import Counter

FRAME_FILE = re.compile(r"\((.*?):\d+\)")


def summarize(path: str) -> tuple[int, Counter, Counter, Counter]:
    own, inclusive, modules = Counter(), Counter(), Counter()
    total = 0
    with open(path) as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            samples = int(count)
            total += samples
            frames = [f for f in stack.split(";") if not f.startswith(("thread", "process"))]
            if not frames:
                continue
            own[frames[-1]] += samples
            match = FRAME_FILE.search(frames[-1])
            source = re.sub(r".*site-packages/", "", match.group(1) if match else frames[-1])
            modules["/".join(source.split("/")[:2])] += samples
            for name in {re.sub(r":\d+\)", ")", frame) for frame in frames}:
                inclusive[name] += samples
    return total, own, inclusive, modules


def main() -> None:
    path, own_rows, inclusive_rows = sys.argv[1], *(int(a) for a in (sys.argv[2:] + ["30", "60"])[:2])
    total, own, inclusive, modules = summarize(path)
    print(f"{total} samples")
    for title, counter, rows in (
        ("own time by module", modules, 20),
        ("own time by function", own, own_rows),
        ("time including callees", inclusive, inclusive_rows),
    ):
        print(f"\n{title}")
        for name, samples in counter.most_common(rows):
            print(f"{samples / total:6.1%}  {name[:160]}")


if __name__ == "__main__":
    main()
