"""Lane order for a GPU worker: INSTANT, then ECONOMY, then TRAINING, and no job hoarded while busy.

Dramatiq alone does not give this. A `Worker` runs one consumer per queue, each prefetching up to
`prefetch` messages into one in-memory work queue, and message or actor `priority` only orders what is
already in that memory. With two lanes and prefetch 1, a worker busy with an INSTANT job still holds one
ECONOMY message: when the job ends, that message runs before an INSTANT one still waiting in Redis, and
meanwhile an idle GPU elsewhere could not take it.

`LaneGate` closes both holes by wrapping the broker's lane consumers (not the delay-queue ones, which
only hand due retries back to their lane):

- a shared count of `slots` (1 per GPU): a lane consumer fetches only while the worker holds fewer
  lane messages on the GPU than that, and a fetched message holds its slot until it is acked, nacked or
  requeued, or its job leaves the GPU for its CPU tail (`left_gpu`: encode, quality gate, upload; see
  gpu_worker/execution.py). So a busy GPU holds nothing in memory and leaves the next job in Redis for
  any idle GPU, while a job's tail never keeps the GPU idle: prefetch is effectively "on demand". At
  most `tail_slots` jobs may be in their tail at once (the worker has that many threads more than GPU
  slots), and each fetch takes one message at most (a Redis consumer would otherwise prefetch several);
- a lower lane fetches only when every higher lane's queue in the broker is empty, checked under the
  same lock as the fetch. So when a slot frees and both lanes have work, INSTANT goes first, while an
  idle GPU still takes ECONOMY work as soon as INSTANT is empty.

Route queues (gpu_worker/contract.py `gpu_queues_by_priority`): a worker that preloads routes consumes,
for each generation lane, those routes' queues just before the lane itself, so a job sent to a worker
that holds its model goes ahead of the lane's other jobs; the INSTANT group (`first_lanes`) stays first.

A message that arrives in a higher lane after a lower one was fetched waits for the next slot (no
preemption of a running job). The lane consumers poll with a short timeout; the wait between polls backs
off to `timeout` when idle.

The order, and why: INSTANT > ECONOMY > TRAINING. Generations are what users watch a progress bar for
(INSTANT is the paid "now" lane, ECONOMY the cheap one, still minutes); a Soul ID training runs once per
identity, holds a GPU for minutes (tens on the real model) and ends in a push, so it fills GPUs that no
generation is waiting for. Putting it between INSTANT and ECONOMY would make every ECONOMY job queued
behind it wait for a whole training. But a busy ECONOMY lane must not starve it: `max_wait_ms` gives a
lane a wait after which its oldest message (by the time the backend made it) moves ahead of every lane
but the first. With GPU_TRAINING_MAX_WAIT_S (600 s) a training waits at most about that long plus one
running job for a GPU as long as INSTANT has nothing waiting.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence

import dramatiq
from dramatiq.broker import Consumer
from dramatiq.common import compute_backoff

logger = logging.getLogger(__name__)

INNER_TIMEOUT_MS = 20  # how long one gated fetch may wait inside the broker's own consumer


class LaneGate:
    def __init__(
        self,
        broker: dramatiq.Broker,
        lanes: Sequence[str],
        *,
        slots: int,
        tail_slots: int = 0,
        max_wait_ms: Mapping[str, int] | None = None,
        first_lanes: int = 1,
    ) -> None:
        if slots < 1 or tail_slots < 0:
            raise ValueError("a lane gate needs at least one slot (and no negative tail slots)")
        if not 1 <= first_lanes <= len(lanes):
            raise ValueError("first_lanes must count at least one of the lanes")
        self.broker = broker
        self.lanes = tuple(lanes)  # highest priority first
        self.slots = slots
        self.tail_slots = tail_slots
        # lane -> how long its oldest message may wait before it goes ahead of every lane but the first
        self.max_wait_ms = dict(max_wait_ms or {})
        # how many lanes at the top no aged lane goes ahead of (INSTANT: its routes' queues and itself)
        self.first_lanes = first_lanes
        self.lock = threading.Lock()
        self.held: set[str] = set()  # every fetched lane message not yet acked, nacked or requeued
        self.in_tail: set[str] = set()  # those whose job left the GPU (its CPU tail runs)

    def install(self) -> LaneGate:
        """Makes the broker hand out gated consumers for the lanes (other queues are untouched)."""
        if getattr(self.broker, "_gpu_lane_gate", None) is not None:
            raise RuntimeError("this broker already has a GPU lane gate")
        original = self.broker.consume

        def consume(queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
            if queue_name not in self.lanes:
                return original(queue_name, prefetch=prefetch, timeout=timeout)
            inner = original(queue_name, prefetch=prefetch, timeout=INNER_TIMEOUT_MS)
            return GatedConsumer(inner, gate=self, lane=queue_name, timeout=timeout)

        self.broker.consume = consume  # type: ignore[method-assign]
        self.broker._gpu_lane_gate = self  # type: ignore[attr-defined]
        return self

    def waiting(self, queue_name: str) -> int:
        """Messages ready in a queue of the broker (not counting delayed retries)."""
        client = getattr(self.broker, "client", None)
        if client is not None:  # RedisBroker: the queue is a list of message ids
            return int(client.llen(f"{self.broker.namespace}:{queue_name}"))
        queues = getattr(self.broker, "queues", None)
        if isinstance(queues, dict) and queue_name in queues:  # StubBroker
            return queues[queue_name].qsize()
        return 0

    def oldest_age_ms(self, queue_name: str) -> float:
        """How long the oldest ready message of a queue has existed (0 when the queue is empty)."""
        data = None
        client = getattr(self.broker, "client", None)
        if client is not None:  # RedisBroker: ids are pushed on the right and fetched from the left
            key = f"{self.broker.namespace}:{queue_name}"
            message_id = client.lindex(key, 0)
            data = client.hget(f"{key}.msgs", message_id) if message_id is not None else None
        else:
            queues = getattr(self.broker, "queues", None)
            if isinstance(queues, dict) and queue_name in queues:  # StubBroker
                with contextlib.suppress(IndexError):
                    data = queues[queue_name].queue[0]
        if data is None:
            return 0.0
        try:
            message = dramatiq.Message.decode(data)
        except Exception:  # not ours to judge here: the worker reports it when it gets there
            return 0.0
        return max(0.0, time.time() * 1000 - message.message_timestamp)

    def order(self) -> tuple[str, ...]:
        """The lanes in the order they are served now: the `first_lanes`, then the lanes whose oldest
        message waited past their `max_wait_ms`, then the others as configured."""
        if not self.max_wait_ms:
            return self.lanes
        first, rest = self.lanes[: self.first_lanes], self.lanes[self.first_lanes :]
        aged = [
            lane
            for lane in rest
            if lane in self.max_wait_ms and self.oldest_age_ms(lane) >= self.max_wait_ms[lane]
        ]
        if not aged:
            return self.lanes
        return (*first, *aged, *(lane for lane in rest if lane not in aged))

    def may_fetch(self, lane: str) -> bool:
        """Called with `lock` held."""
        on_gpu = len(self.held) - len(self.in_tail)
        if on_gpu >= self.slots or len(self.held) >= self.slots + self.tail_slots:
            return False
        order = self.order()
        higher = order[: order.index(lane)]
        return all(self.waiting(queue) == 0 for queue in higher)

    def left_gpu(self, message_id: str) -> None:
        """The job of a held message is done with the GPU: its slot goes to the next job, while the
        message stays held (unacked) until its tail ends."""
        with self.lock:
            if message_id in self.held:
                self.in_tail.add(message_id)

    def release(self, message_id: str) -> None:
        with self.lock:
            self.held.discard(message_id)
            self.in_tail.discard(message_id)


class GatedConsumer(Consumer):
    def __init__(self, inner: Consumer, *, gate: LaneGate, lane: str, timeout: int) -> None:
        self.inner = inner
        self.gate = gate
        self.lane = lane
        self.timeout = timeout
        self.misses = 0

    def __next__(self):
        with self.gate.lock:
            if self.gate.may_fetch(self.lane):
                if hasattr(self.inner, "outstanding_message_count"):  # a Redis consumer: one at a time
                    self.inner.prefetch = self.inner.outstanding_message_count + 1
                message = next(self.inner)
                if message is not None:
                    self.gate.held.add(message.message_id)
                    self.misses = 0
                    return message
        self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
        time.sleep(backoff_ms / 1000)
        return None

    def ack(self, message) -> None:
        try:
            self.inner.ack(message)
        finally:
            self.gate.release(message.message_id)

    def nack(self, message) -> None:
        try:
            self.inner.nack(message)
        finally:
            self.gate.release(message.message_id)

    def requeue(self, messages) -> None:
        messages = list(messages)
        try:
            self.inner.requeue(messages)
        finally:
            for message in messages:
                self.gate.release(message.message_id)

    def close(self) -> None:
        self.inner.close()
