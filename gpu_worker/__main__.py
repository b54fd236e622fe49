"""`python -m gpu_worker`: a GPU worker process. No Django.

It consumes the GPU lanes (INSTANT, then ECONOMY, then TRAINING; gpu_worker/lanes.py), each lane's queues
of the routes in GPU_PRELOAD_ROUTES first (advertised while loaded: gpu_worker/routes_held.py), from the Redis
broker at REDIS_URL with one thread per GPU, runs each generation (gpu_worker/runner.py) or Soul ID
training (gpu_worker/training.py, on the same loaded models) and sends events to the backend's
job-events queue. SIGTERM or SIGINT stops it gracefully: the running job may finish (up to
GPU_STOP_TIMEOUT_S), the lanes keep their other messages; a second signal exits at once, and Redis
redelivers an unfinished job to another worker once this one's heartbeat times out. After a fatal CUDA
error (the job is reported retryable, for another worker) it stops the same way and exits with
EXIT_GPU_FAULT, so its supervisor starts a fresh process. Settings: gpu_worker/settings.py.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # GPU workers load local folders only

EXIT_GPU_FAULT = 3  # the CUDA context broke: restart the process (a supervisor restarts on non-zero)


def main() -> int:
    from gpu_worker.logs import configure_logging

    configure_logging()  # LOG_FORMAT=json|text, LOG_LEVEL
    from dramatiq.brokers.redis import RedisBroker

    from gpu_worker.actors import broker_sink, build_worker, redis_cancel_checker, redis_signal_client
    from gpu_worker.content_credentials import ContentCredentialsError, content_credentials_from_settings
    from gpu_worker.routes_held import RouteAdvertiser
    from gpu_worker.runner import Runner, default_max_loaded_models
    from gpu_worker.settings import WorkerSettings
    from gpu_worker.storage import storage_from_env

    try:
        settings = WorkerSettings.from_env()
    except ValueError as exc:
        print(f"gpu_worker: {exc}", file=sys.stderr)
        return 2
    if not settings.redis_url:
        print("gpu_worker: REDIS_URL is not set", file=sys.stderr)
        return 2
    try:
        content_credentials = content_credentials_from_settings(settings.label)
    except ContentCredentialsError as exc:
        print(f"gpu_worker: {exc}", file=sys.stderr)
        return 2

    import diffusers

    from gpu_worker import pipelines

    diffusers.utils.logging.disable_progress_bar()
    for family in pipelines.FAMILY_MODULES:  # import the pipelines now rather than in the first job
        pipelines.family_module(family)

    broker = RedisBroker(url=settings.redis_url)
    # What a running job sends and reads from its steps goes through a client whose calls time out
    # (GPU_REDIS_TIMEOUT_S): a network partition must not hang a denoising loop.
    signals = RedisBroker(client=redis_signal_client(settings.redis_url, timeout_s=settings.redis_timeout_s))
    runner = Runner(
        storage=storage_from_env(),
        sink=broker_sink(signals),
        cancel_checker=redis_cancel_checker(signals.client),
        model_root=settings.model_root,
        device=settings.device,
        progress_interval=settings.progress_interval_s,
        max_loaded_models=settings.max_loaded_models or default_max_loaded_models(settings.device),
        warmup_shapes=settings.warmup_shapes or None,
        lora_hotswap_rank=settings.lora_hotswap_rank,
        content_credentials=content_credentials,
    )
    # The preloaded routes' queues are consumed first, and advertised while their models are loaded
    held_routes = [route.name for route in settings.preload_routes]
    advertiser = RouteAdvertiser(signals.client, held_routes, runner.loaded_route_names)
    runner.on_model_loaded = lambda name: advertiser.advertise([name])
    if settings.preload_routes:
        logging.getLogger("gpu_worker").info(
            "preloaded routes: %s", ", ".join(runner.preload(settings.preload_routes)) or "none"
        )
    stop = threading.Event()
    gpu_fault = threading.Event()

    def on_gpu_fault() -> None:
        gpu_fault.set()
        stop.set()

    worker = build_worker(
        broker,
        runner,
        threads=settings.threads,
        tail_threads=settings.tail_threads,
        time_limit_s=settings.time_limit_s,
        training_time_limit_s=settings.training_time_limit_s,
        training_max_wait_s=settings.training_max_wait_s,
        on_gpu_fault=on_gpu_fault,
        held_routes=held_routes,
    )

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            logging.getLogger("gpu_worker").warning("second signal: exiting now")
            os._exit(1)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    metrics_port = int(os.environ.get("GPU_METRICS_PORT") or 0)
    if metrics_port:  # off by default: a scrape port of its own (gpu_worker/metrics.py)
        from gpu_worker.metrics import start_metrics_server

        start_metrics_server(metrics_port, addr=os.environ.get("GPU_METRICS_ADDR", "0.0.0.0"))

    broker.emit_after("process_boot")
    worker.start()
    advertiser.start()
    logging.getLogger("gpu_worker").info(
        "GPU worker ready: lanes %s, %d thread(s), models in %s, up to %d loaded",
        ", ".join(sorted(worker.consumer_whitelist or ())),
        settings.threads,
        settings.model_root,
        runner.max_loaded_models,
    )
    stop.wait()
    logging.getLogger("gpu_worker").info(
        "stopping: waiting up to %ss for the running job", settings.stop_timeout_s
    )
    advertiser.stop()
    worker.stop(timeout=settings.stop_timeout_s * 1000)
    signals.close()
    broker.close()
    if gpu_fault.is_set():
        logging.getLogger("gpu_worker").critical("exiting after a fatal GPU error")
        return EXIT_GPU_FAULT
    return 0


if __name__ == "__main__":
    sys.exit(main())
