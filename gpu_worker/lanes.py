"""Lane order for a GPU worker: INSTANT before ECONOMY, and no job hoarded while the GPU is busy.

Dramatiq alone does not give this. A `Worker` runs one consumer per queue, each prefetching up to
`prefetch` messages into one in-memory work queue, and message or actor `priority` only orders what is
already in that memory. With two lanes and prefetch 1, a worker busy with an INSTANT job still holds one
ECONOMY message: when the job ends, that message runs before an INSTANT one still waiting in Redis, and
meanwhile an idle GPU elsewhere could not take it.

`LaneGate` closes both holes by wrapping the broker's lane consumers (not the delay-queue ones, which
only hand due retries back to their lane):

- a shared count of `slots` (= worker threads, so 1 per GPU): a lane consumer fetches only while the
  worker holds fewer lane messages than that, and a fetched message holds its slot until it is acked,
  nacked or requeued. So a busy GPU holds nothing in memory and leaves the next job in Redis for any
  idle GPU: prefetch is effectively "on demand";
- a lower lane fetches only when every higher lane's queue in the broker is empty, checked under the
  same lock as the fetch. So when a slot frees and both lanes have work, INSTANT goes first, while an
  idle GPU still takes ECONOMY work as soon as INSTANT is empty.

A message that arrives in a higher lane after a lower one was fetched waits for the next slot (no
preemption of a running job). The lane consumers poll with a short timeout; the wait between polls backs
off to `timeout` when idle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import dramatiq
from dramatiq.broker import Consumer
from dramatiq.common import compute_backoff

logger = logging.getLogger(__name__)

INNER_TIMEOUT_MS = 20  # how long one gated fetch may wait inside the broker's own consumer


class LaneGate:
    def __init__(self, broker: dramatiq.Broker, lanes: Sequence[str], *, slots: int) -> None:
        if slots < 1:
            raise ValueError("a lane gate needs at least one slot")
        self.broker = broker
        self.lanes = tuple(lanes)  # highest priority first
        self.slots = slots
        self.lock = threading.Lock()
        self.held: set[str] = set()

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

    def may_fetch(self, lane: str) -> bool:
        """Called with `lock` held."""
        if len(self.held) >= self.slots:
            return False
        higher = self.lanes[: self.lanes.index(lane)]
        return all(self.waiting(queue) == 0 for queue in higher)

    def release(self, message_id: str) -> None:
        with self.lock:
            self.held.discard(message_id)


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
