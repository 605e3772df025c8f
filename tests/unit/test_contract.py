"""The published contract (schemas/) matches the models, and the AsyncAPI document is valid AsyncAPI 3.0."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema

from provisioner.events import asyncapi
from provisioner.events.schema import schemas

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
CACHE = Path(os.environ.get("CACHE_DIR", Path.home() / ".cache" / "gluster-provisioner"))
ASYNCAPI_SCHEMA = CACHE / "asyncapi-specs-6.11.1" / "schemas" / "3.0.0-without-$id.json"
REGENERATE = "regenerate with `provisioner schemas export schemas` and commit the result"


def test_every_event_schema_is_committed_and_current() -> None:
    generated = schemas()
    committed = {p.name for p in SCHEMAS.glob("org.gluster.*.json")}
    assert committed == set(generated), REGENERATE
    for name, text in generated.items():
        assert (SCHEMAS / name).read_text() == text, f"schemas/{name} drifted from the models: {REGENERATE}"


def test_asyncapi_document_is_committed_and_current() -> None:
    expected = json.dumps(asyncapi.document(), indent=2, sort_keys=True) + "\n"
    assert (SCHEMAS / "asyncapi.json").read_text() == expected, f"schemas/asyncapi.json drifted: {REGENERATE}"


def test_asyncapi_document_validates_against_the_asyncapi_3_schema() -> None:
    assert ASYNCAPI_SCHEMA.is_file(), f"{ASYNCAPI_SCHEMA} is missing: `deploy/dev/stack install` fetches it"
    meta = json.loads(ASYNCAPI_SCHEMA.read_text())
    errors = list(jsonschema.Draft7Validator(meta).iter_errors(asyncapi.document()))
    assert errors == [], [f"{list(e.path)}: {e.message[:200]}" for e in errors[:5]]


def test_a_request_built_from_the_schema_alone_is_accepted() -> None:
    """What a non-Python producer would do: write JSON by the schema, nothing else."""
    from provisioner.events.envelope import decode_request

    schema = json.loads((SCHEMAS / "org.gluster.volume.provision.requested.v1.json").read_text())
    data = {"cluster": "dev", "size": 1073741824, "durability": {"type": "replicate", "replica": 3}}
    jsonschema.Draft202012Validator(schema).validate(data)
    event = {
        "specversion": "1.0",
        "id": "kcat-1",
        "source": "/kcat",
        "type": schema["$id"].removeprefix("urn:"),
        "data": data,
    }
    assert decode_request(json.dumps(event).encode()).data.size == 1073741824  # type: ignore[attr-defined]
