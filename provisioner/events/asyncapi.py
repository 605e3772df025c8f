"""The AsyncAPI 3.0 document of the provisioner's topics, keys and messages, generated from the models.

It is the contract for producers and consumers in any language: which topic carries which
CloudEvents ``type``, what the Kafka key is, and the JSON Schema of every event's ``data``.
``schemas/asyncapi.json`` is this document; a test fails when it drifts from the models.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from provisioner import __version__
from provisioner.events.catalog import PROGRESS_TYPES, REQUEST_TYPES, RESULT_TYPES
from provisioner.events.models import Model

REF = "#/components/schemas/{model}"


def _message_name(event_type: str) -> str:
    # org.gluster.volume.provision.requested.v1 -> VolumeProvisionRequested
    parts = event_type.split(".")[2:-1]
    return "".join(p.capitalize() for p in parts)


def _envelope(event_type: str, model: type[Model]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["specversion", "id", "source", "type", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "minLength": 1, "maxLength": 128},
            "source": {"type": "string", "minLength": 1},
            "type": {"const": event_type},
            "subject": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "data": {"$ref": REF.format(model=model.__name__)},
        },
    }


def _asyncapi_dialect(node: Any) -> Any:
    """AsyncAPI's schema object takes ``discriminator`` as a property name, not OpenAPI's object."""
    if isinstance(node, dict):
        return {
            k: (v["propertyName"] if k == "discriminator" and isinstance(v, dict) else _asyncapi_dialect(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_asyncapi_dialect(v) for v in node]
    return node


def document(*, topics: dict[str, str] | None = None) -> dict[str, Any]:
    """The AsyncAPI document; ``topics`` maps channel ids to topic names (defaults: the settings')."""
    names = {"requests": "gluster.requests", "results": "gluster.results", "dlq": "gluster.dlq"} | (topics or {})
    models = sorted(
        {*REQUEST_TYPES.values(), *RESULT_TYPES.values(), *PROGRESS_TYPES.values()}, key=lambda m: m.__name__
    )
    _, definitions = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    schemas: dict[str, Any] = _asyncapi_dialect(dict(definitions.get("$defs", {})))

    def messages(types: dict[str, type[Model]], key: str) -> dict[str, Any]:
        return {
            _message_name(t): {
                "name": _message_name(t),
                "title": t,
                "contentType": "application/cloudevents+json",
                "headers": {
                    "type": "object",
                    "properties": {
                        "ce_type": {"const": t},
                        "ce_specversion": {"const": "1.0"},
                        "ce_id": {"type": "string"},
                        "ce_source": {"type": "string"},
                    },
                },
                "payload": _envelope(t, model),
                "bindings": {"kafka": {"key": {"type": "string", "description": key}}},
            }
            for t, model in sorted(types.items())
        }

    request_messages = messages(REQUEST_TYPES, "the cluster id (equal to data.cluster)")
    result_messages = messages(
        {**RESULT_TYPES, **PROGRESS_TYPES}, "the volume id, or the cluster id for topology results"
    )
    components_messages = {**request_messages, **result_messages}

    def refs(group: dict[str, Any]) -> dict[str, Any]:
        return {name: {"$ref": f"#/components/messages/{name}"} for name in group}

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "gluster-provisioner events",
            "version": __version__,
            "description": "CloudEvents 1.0 (structured JSON mode, plus ce_* Kafka headers) that request GlusterFS "
            "volumes and report their outcome: exactly one terminal result per request; read results with "
            "isolation.level=read_committed. Invalid requests are copied to the dead-letter topic with "
            "dlq_reason and dlq_message headers.",
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {"kafka": {"host": "localhost:9092", "protocol": "kafka", "description": "any Kafka >= 3"}},
        "channels": {
            "requests": {
                "address": names["requests"],
                "description": "Requests, keyed by cluster id: one cluster, one partition, one owner daemon.",
                "messages": refs(request_messages),
            },
            "results": {
                "address": names["results"],
                "description": "One terminal result per request (…succeeded / …failed), keyed by volume id, "
                "and progress events (…progressed) of long requests.",
                "messages": refs(result_messages),
            },
            "dlq": {
                "address": names["dlq"],
                "description": "Original bytes and headers of events that could not be decoded or validated.",
            },
        },
        "operations": {
            "sendRequest": {
                "action": "send",
                "channel": {"$ref": "#/channels/requests"},
                "summary": "A producer asks for a volume or a topology change.",
                "messages": [{"$ref": f"#/channels/requests/messages/{n}"} for n in request_messages],
            },
            "receiveResult": {
                "action": "receive",
                "channel": {"$ref": "#/channels/results"},
                "summary": "A producer learns what became of its request (match data.request_id).",
                "messages": [{"$ref": f"#/channels/results/messages/{n}"} for n in result_messages],
            },
            "receiveDeadLetter": {
                "action": "receive",
                "channel": {"$ref": "#/channels/dlq"},
                "summary": "Operators inspect rejected events and their reasons.",
            },
        },
        "components": {"schemas": schemas, "messages": components_messages},
    }
