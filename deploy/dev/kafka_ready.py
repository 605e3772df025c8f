#!/usr/bin/env python3
"""Readiness probe for the dev/test Kafka broker (deploy/dev/kafka.sh).

Ready means a real Metadata request succeeds and names at least one broker. With
--check-transactions it also commits one tiny transaction (a record on topic __ready_check plus
send_offsets_to_transaction) so the transaction coordinator and the group coordinator, and
their internal topics, exist before tests start.

Exit 0 when ready (broker ids on stdout), 1 with the reason on stderr otherwise.

    python3 deploy/dev/kafka_ready.py --bootstrap 127.0.0.1:19092 --timeout 60 --check-transactions
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import time

READY_TOPIC = "__ready_check"


class _LastError(logging.Handler):
    """Keeps the last warning/error aiokafka logged, to explain a failure."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.last = record.getMessage()
        except Exception:  # pragma: no cover - a bad log call must not break the probe
            pass


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


async def wait_metadata(bootstrap: str, deadline: float, errors: _LastError) -> list[int]:
    """Retry a Metadata request until it lists a broker or the deadline passes."""
    from aiokafka import AIOKafkaClient

    reason = "no attempt made"
    while True:
        left = _remaining(deadline)
        if left <= 0:
            raise TimeoutError(f"no metadata from {bootstrap}: {reason}")
        req_ms = int(max(0.5, min(left, 5.0)) * 1000)
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=req_ms)
        try:
            errors.last = None
            await asyncio.wait_for(client.bootstrap(), timeout=max(0.5, left))
            brokers = sorted(b.nodeId for b in client.cluster.brokers())
            if brokers:
                return brokers
            reason = "metadata response lists no broker"
        except Exception as exc:  # connection refused, timeout, broker not yet serving
            reason = errors.last or f"{type(exc).__name__}: {exc}"
        finally:
            try:
                await asyncio.wait_for(client.close(), timeout=2)
            except Exception:
                pass
        await asyncio.sleep(min(0.25, max(0.0, _remaining(deadline))))


async def check_transactions(bootstrap: str, deadline: float, errors: _LastError) -> float:
    """Commit one transaction (record + consumer offsets); return the seconds it took."""
    from aiokafka import AIOKafkaProducer, TopicPartition

    started = time.monotonic()
    txn_id = f"{READY_TOPIC}-{socket.gethostname()}-{os.getpid()}"
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=txn_id,
        enable_idempotence=True,
        request_timeout_ms=10000,
        retry_backoff_ms=100,
    )

    async def run() -> None:
        await producer.start()
        async with producer.transaction():
            meta = await producer.send_and_wait(READY_TOPIC, b"ready", key=b"ready")
            # Also brings up the group coordinator (__consumer_offsets) inside a transaction.
            await producer.send_offsets_to_transaction(
                {TopicPartition(meta.topic, meta.partition): meta.offset + 1}, READY_TOPIC
            )

    try:
        left = _remaining(deadline)
        if left <= 0:
            raise TimeoutError("no time left for the transaction check")
        await asyncio.wait_for(run(), timeout=left)
    except TimeoutError as exc:
        raise TimeoutError(
            f"transactional commit on {READY_TOPIC} did not finish in time"
            + (f" (last client message: {errors.last})" if errors.last else "")
        ) from exc
    finally:
        try:
            await asyncio.wait_for(producer.stop(), timeout=5)
        except Exception:
            pass
    return time.monotonic() - started


async def main_async(args: argparse.Namespace) -> int:
    errors = _LastError()
    aiolog = logging.getLogger("aiokafka")
    aiolog.addHandler(errors)
    aiolog.propagate = args.verbose
    aiolog.setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

    started = time.monotonic()
    deadline = started + args.timeout
    try:
        brokers = await wait_metadata(args.bootstrap, deadline, errors)
    except Exception as exc:
        print(f"kafka_ready: not ready: {exc}", file=sys.stderr)
        return 1
    meta_s = time.monotonic() - started
    print(f"broker {','.join(map(str, brokers))} at {args.bootstrap}")
    if not args.quiet:
        print(f"kafka: metadata ok after {meta_s:.1f}s (broker {brokers[0]})", file=sys.stderr)

    if args.check_transactions:
        try:
            txn_s = await check_transactions(args.bootstrap, deadline, errors)
        except Exception as exc:
            print(f"kafka_ready: transactions not ready: {exc}", file=sys.stderr)
            return 1
        if not args.quiet:
            print(f"kafka: transaction committed in {txn_s:.1f}s", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    p.add_argument("--timeout", type=float, default=60.0, help="overall seconds (default 60)")
    p.add_argument(
        "--check-transactions",
        action="store_true",
        help=f"also commit one transaction on topic {READY_TOPIC}",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--verbose", action="store_true", help="aiokafka debug logging")
    args = p.parse_args(argv)
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
