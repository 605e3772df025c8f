"""Event decoding: every bad input becomes InvalidEvent with a reason, every good one a typed model."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.errors import InvalidEvent
from provisioner.events import catalog, models
from provisioner.events.envelope import decode_request, encode, header, new_event


def envelope(data: dict[str, Any], type_: str = catalog.PROVISION_REQUESTED) -> bytes:
    return json.dumps({"specversion": "1.0", "id": "r1", "source": "/test", "type": type_, "data": data}).encode()


def test_round_trip_with_headers() -> None:
    event = new_event(catalog.PROVISION_REQUESTED, models.ProvisionVolume(cluster="dev", size=1), source="/t")
    value, headers = encode(event)
    decoded = decode_request(value)
    assert decoded.data == event.data
    assert decoded.id == event.id
    assert header(headers, "ce_type") == catalog.PROVISION_REQUESTED
    assert header(headers, "ce_specversion") == "1.0"
    assert (
        header(
            headers,
            "content-type",
        )
        == "application/cloudevents+json; charset=utf-8"
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "MalformedJson"),
        (b"\xff\xfe", "MalformedJson"),
        (b"[1, 2]", "InvalidEnvelope"),
        (
            json.dumps(
                {"specversion": "0.3", "id": "x", "source": "/", "type": catalog.PROVISION_REQUESTED, "data": {}}
            ).encode(),
            "InvalidEnvelope",
        ),
        (envelope({}, type_="org.example.nope.v1"), "UnknownType"),
        (envelope({"cluster": "dev"}), "InvalidData"),
        (envelope({"cluster": "dev", "size": 1, "name": "bad/name"}), "InvalidData"),
        (envelope({"cluster": "dev", "size": 1, "name": "all"}), "InvalidData"),
        (envelope({"cluster": "dev", "size": 1, "options": {"x.y": "a b"}}), "InvalidData"),
        (envelope({"cluster": "dev", "size": 1, "options": {"user.provisioner.id": "a"}}), "InvalidData"),
        (envelope({"cluster": "dev", "size": 1, "options": {"auth.allow": "10.0.0.1"}}), "InvalidData"),
        (envelope({"cluster": "dev", "size": 1, "snapshot_factor": 0.5}), "InvalidData"),
        (envelope({"cluster": "Dev!", "size": 1}), "InvalidData"),
        (
            envelope({"cluster": "dev", "size": 1, "durability": {"type": "replicate", "replica": 2, "arbiter": True}}),
            "InvalidData",
        ),
        (
            envelope({"cluster": "dev", "size": 1, "durability": {"type": "disperse", "data": 2, "redundancy": 2}}),
            "InvalidData",
        ),
        (envelope({"cluster": "dev", "size": 1, "surprise": True}), "InvalidData"),
        (envelope({"cluster": "dev"}, type_=catalog.DELETE_REQUESTED), "InvalidData"),
        (None, "EmptyEvent"),
        # Hostile shapes: each once killed the partition's dispatcher instead of costing one dead letter.
        (b"[" * 100_000, "MalformedJson"),
        (b"9" * 5_000, "MalformedJson"),
        (envelope({"cluster": "dev", "size": 1}).replace(b'"size": 1', b'"size": ' + b"9" * 5_000), "MalformedJson"),
        (
            envelope({"cluster": "dev", "size": 1}).replace(b'"size": 1', b'"size": ' + b"[" * 900 + b"]" * 900),
            "InvalidData",
        ),
        # Strict like the schemas: no string for a number, no word for a boolean.
        (envelope({"cluster": "dev", "size": "5368709120"}), "InvalidData"),
        (envelope({"cluster": "dev", "size": True}), "InvalidData"),
        (envelope({"cluster": "dev", "size": 1.0}), "InvalidData"),
        (
            envelope(
                {"cluster": "dev", "size": 1, "durability": {"type": "replicate", "replica": 3, "arbiter": "yes"}}
            ),
            "InvalidData",
        ),
    ],
)
def test_bad_events_name_their_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEvent) as failure:
        decode_request(value)
    assert failure.value.dead_letter_reason == reason
    assert len(str(failure.value)) < 4000, "a reason stays a few lines whatever the input"


def test_error_names_the_field() -> None:
    with pytest.raises(InvalidEvent, match=r"durability\.replicate\.replica"):
        decode_request(envelope({"cluster": "dev", "size": 1, "durability": {"type": "replicate", "replica": 9}}))


def test_topology_device_paths_cannot_escape() -> None:
    data = {
        "cluster": "dev",
        "nodes": [
            {
                "node": {"hostnames": {"manage": ["n1"], "storage": ["n1"]}},
                "devices": [{"name": "/srv/../etc", "backend": "file", "capacity": 1}],
            }
        ],
    }
    with pytest.raises(InvalidEvent, match=r"'\.\.' segments"):
        decode_request(envelope(data, type_=catalog.TOPOLOGY_LOAD_REQUESTED))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_as_other_errors(value: bytes) -> None:
    with contextlib.suppress(InvalidEvent):
        decode_request(value)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
        max_leaves=20,
    )
)
def test_arbitrary_json_data_never_escapes(data: object) -> None:
    value = json.dumps(
        {"specversion": "1.0", "id": "r", "source": "/", "type": catalog.PROVISION_REQUESTED, "data": data}
    ).encode()
    with contextlib.suppress(InvalidEvent):
        decode_request(value)


def test_allowed_options_and_snapshot_factor_pass() -> None:
    event = decode_request(
        envelope({"cluster": "dev", "size": 1, "options": {"performance.read-ahead": "off"}, "snapshot_factor": 1.5})
    )
    assert isinstance(event.data, models.ProvisionVolume)
    assert event.data.options == {"performance.read-ahead": "off"}
    assert event.data.snapshot_factor == 1.5


def test_every_request_type_the_cli_can_send_is_accepted() -> None:
    node = {"node": {"hostnames": {"manage": ["10.0.0.4"], "storage": ["10.0.0.4"]}}, "devices": []}
    samples: dict[str, dict[str, Any]] = {
        catalog.NODE_ADD_REQUESTED: {"cluster": "dev", "node": node},
        catalog.NODE_REMOVE_REQUESTED: {"cluster": "dev", "host": "10.0.0.4"},
        catalog.NODE_ENABLE_REQUESTED: {"cluster": "dev", "host": "10.0.0.4"},
        catalog.NODE_DISABLE_REQUESTED: {"cluster": "dev", "host": "10.0.0.4"},
        catalog.DEVICE_ADD_REQUESTED: {
            "cluster": "dev",
            "host": "10.0.0.4",
            "device": {"name": "/d", "capacity": 1, "backend": "file"},
        },
        catalog.DEVICE_REMOVE_REQUESTED: {"cluster": "dev", "host": "10.0.0.4", "name": "/d"},
        catalog.DEVICE_ENABLE_REQUESTED: {"cluster": "dev", "host": "10.0.0.4", "name": "/d"},
        catalog.DEVICE_DISABLE_REQUESTED: {"cluster": "dev", "host": "10.0.0.4", "name": "/d"},
        catalog.DEVICE_RESYNC_REQUESTED: {"cluster": "dev", "host": "10.0.0.4", "name": "/d"},
        catalog.EXPAND_REQUESTED: {"cluster": "dev", "name": "v", "size": 1},
        catalog.CLONE_REQUESTED: {"cluster": "dev", "name": "copy", "from_snapshot": "monday"},
        catalog.SNAPSHOT_CREATE_REQUESTED: {"cluster": "dev", "volume": "v", "name": "monday"},
        catalog.SNAPSHOT_DELETE_REQUESTED: {"cluster": "dev", "name": "monday"},
        catalog.SNAPSHOT_LIST_REQUESTED: {"cluster": "dev"},
    }
    for type_, data in samples.items():
        assert decode_request(envelope(data, type_=type_)).type == type_
    assert set(samples) | {
        catalog.PROVISION_REQUESTED,
        catalog.DELETE_REQUESTED,
        catalog.TOPOLOGY_LOAD_REQUESTED,
    } == set(catalog.REQUEST_TYPES)
