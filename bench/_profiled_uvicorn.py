"""uvicorn under cProfile, for BENCH_PROFILE=<file> (bench/_stack.py): on SIGUSR1 the server's main thread
(the event loop and everything it runs) is reported to <file>, the 40 functions with the most own time
and the 40 with the most cumulative time. A signal rather than the exit, because the server's shutdown may
outlast the benchmark's patience and be killed."""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import signal
import sys

import uvicorn

if __name__ == "__main__":
    output, *args = sys.argv[1:]
    sys.path.insert(0, os.getcwd())  # as `python -m uvicorn` would, for backend.asgi
    profiler = cProfile.Profile()

    def report(*_) -> None:
        profiler.disable()
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(40)
        with open(output + ".part", "w") as file:
            file.write(text.getvalue())
        os.replace(output + ".part", output)

    signal.signal(signal.SIGUSR1, report)
    profiler.enable()
    uvicorn.main(args)
