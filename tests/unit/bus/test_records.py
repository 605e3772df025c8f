"""What the lane writes stays under the broker's limit whatever it was given: a dead letter keeps a
small original whole and a large one by reference, and a node's long error text never makes a
result too big to publish (a too-big record broke the lane, which re-read and re-ran it forever)."""

from __future__ import annotations

import base64
import hashlib
import json

from provisioner.bus.records import HEAD_BYTES, Records, Topics
from provisioner.events.models import MESSAGE_LIMIT

LIMIT = 1_000_000  # the broker's default max.message.bytes, about
RECORDS = Records(Topics(results="results", state="state", dlq="dlq", limit=LIMIT))


def letter(value: bytes, *, key: bytes | None = b"dev", message: str = "bad") -> tuple[dict[str, bytes], bytes]:
    record = RECORDS.dead_letter(
        topic="requests",
        partition=2,
        offset=41,
        key=key,
        value=value,
        headers=[("ce_type", b"x")],
        reason="MalformedJson",
        message=message,
    )
    assert record.size <= LIMIT and record.topic == "dlq"
    return dict(record.headers), record.value or b""


def test_a_small_original_is_kept_whole_with_why_and_where() -> None:
    headers, value = letter(b"{not json")
    assert value == b"{not json" and headers["ce_type"] == b"x"
    assert headers["dlq_reason"] == b"MalformedJson" and headers["dlq_offset"] == b"41"
    assert headers["dlq_partition"] == b"2" and headers["dlq_topic"] == b"requests"


def test_an_original_near_or_over_the_limit_is_kept_by_reference() -> None:
    for size in (LIMIT - 200, LIMIT, 2 * LIMIT, 8 * LIMIT):
        original = bytes(range(256)) * (size // 256)
        headers, value = letter(original, key=b"k" * 5000)
        assert headers["dlq_original"] == b"reference" and "ce_type" not in headers
        reference = json.loads(value)["original"]
        assert reference["topic"] == "requests" and reference["partition"] == 2 and reference["offset"] == 41
        assert reference["size"] == len(original)
        assert reference["sha256"] == hashlib.sha256(original).hexdigest()
        assert base64.b64decode(reference["head"]) == original[:HEAD_BYTES]


def test_a_long_reason_is_cut_in_the_dead_letter() -> None:
    headers, _ = letter(b"x", message="y" * 3_000_000)
    assert len(headers["dlq_message"]) <= MESSAGE_LIMIT
