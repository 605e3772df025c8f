"""CloudEvents 1.0 in structured JSON mode, plus the ``ce_*`` Kafka headers.

The value is the whole event as JSON (so any consumer can read it without our code); the headers
repeat the attributes so generic CloudEvents routers can act without parsing the body. Decoding is
strict and total: any input either becomes a typed request or raises ``InvalidEvent`` with a
reason code, which the consumer turns into a dead letter.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from provisioner.errors import InvalidEvent
from provisioner.events.catalog import PROGRESS_TYPES, REQUEST_TYPES, RESULT_TYPES
from provisioner.events.models import Model

Headers = list[tuple[str, bytes]]
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
MAX_EVENT_BYTES = 1024 * 1024


class Envelope(BaseModel):
    """CloudEvents context attributes. Extension attributes are allowed, as the spec says."""

    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: Literal["1.0"]
    id: Annotated[str, Field(min_length=1, max_length=128)]
    source: Annotated[str, Field(min_length=1, max_length=512)]
    type: Annotated[str, Field(min_length=1, max_length=256)]
    subject: Annotated[str, Field(max_length=512)] | None = None
    time: datetime | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    source: str
    subject: str | None
    time: datetime
    data: Model


def new_event(type_: str, data: Model, *, source: str, subject: str | None = None, id_: str | None = None) -> Event:
    return Event(
        id=id_ or uuid.uuid4().hex,
        type=type_,
        source=source,
        subject=subject,
        time=datetime.now(UTC),
        data=data,
    )


def encode(event: Event) -> tuple[bytes, Headers]:
    time = event.time.isoformat().replace("+00:00", "Z")
    body: dict[str, object] = {
        "specversion": "1.0",
        "id": event.id,
        "source": event.source,
        "type": event.type,
        **({"subject": event.subject} if event.subject is not None else {}),
        "time": time,
        "datacontenttype": "application/json",
        "data": event.data.model_dump(mode="json"),
    }
    headers: Headers = [
        ("content-type", STRUCTURED_CONTENT_TYPE.encode()),
        ("ce_specversion", b"1.0"),
        ("ce_id", event.id.encode()),
        ("ce_source", event.source.encode()),
        ("ce_type", event.type.encode()),
        ("ce_time", time.encode()),
    ]
    if event.subject is not None:
        headers.append(("ce_subject", event.subject.encode()))
    return json.dumps(body, separators=(",", ":")).encode(), headers


def decode(value: bytes | None, types: Mapping[str, type[Model]]) -> Event:
    """Decode and validate one event against the models of ``types``."""
    if value is None:
        raise InvalidEvent("the message has no value (a tombstone is not a request)", reason="EmptyEvent")
    if len(value) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event of {len(value)} bytes exceeds {MAX_EVENT_BYTES}", reason="EventTooLarge")
    try:
        raw = json.loads(value)
    except RecursionError as e:  # ``[[[[...`` deeper than the interpreter's stack
        raise InvalidEvent("not JSON this daemon reads: nested too deeply", reason="MalformedJson") from e
    except ValueError as e:  # not UTF-8, not JSON, or an integer of more digits than Python converts
        raise InvalidEvent(f"not JSON: {_head(str(e))}", reason="MalformedJson") from e
    if not isinstance(raw, dict):
        raise InvalidEvent("a CloudEvent must be a JSON object", reason="InvalidEnvelope")
    try:
        envelope = Envelope.model_validate(raw)
    except RecursionError as e:
        raise InvalidEvent("not a CloudEvents 1.0 envelope: nested too deeply", reason="InvalidEnvelope") from e
    except ValidationError as e:
        raise InvalidEvent(f"not a CloudEvents 1.0 envelope: {_describe(e)}", reason="InvalidEnvelope") from e
    model = types.get(envelope.type)
    if model is None:
        raise InvalidEvent(
            f"unknown event type {envelope.type!r}; known: {', '.join(sorted(types))}", reason="UnknownType"
        )
    try:
        data = model.model_validate(envelope.data)
    except RecursionError as e:
        raise InvalidEvent(f"{envelope.type}: nested too deeply", reason="InvalidData") from e
    except ValidationError as e:
        raise InvalidEvent(f"{envelope.type}: {_describe(e)}", reason="InvalidData") from e
    return Event(
        id=envelope.id,
        type=envelope.type,
        source=envelope.source,
        subject=envelope.subject,
        time=envelope.time or datetime.now(UTC),
        data=data,
    )


def decode_request(value: bytes | None) -> Event:
    return decode(value, REQUEST_TYPES)


def decode_result(value: bytes | None) -> Event:
    """An event of the results topic: a terminal result or a progress event (see ``is_terminal``)."""
    return decode(value, {**RESULT_TYPES, **PROGRESS_TYPES})


def _describe(error: ValidationError) -> str:
    """Name every bad field by its path, e.g. ``durability.replica: Input should be ...``."""
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(p) for p in item["loc"]) or "(root)"
        parts.append(f"{location}: {item['msg']}")
    more = error.error_count() - 5
    return _head("; ".join(parts) + (f"; and {more} more" if more > 0 else ""))


def _head(text: str, limit: int = 2000) -> str:
    """A reason stays a few lines, whatever the input echoed into it."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


def header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            return value.decode(errors="replace")
    return None
