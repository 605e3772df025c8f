"""JSON Schema of every event's ``data``, generated from the models (``schemas/`` holds the output).

A test regenerates these and fails when the committed files differ, so producers in other
languages can trust ``schemas/`` as the contract.
"""

from __future__ import annotations

import json

from provisioner.events.catalog import PROGRESS_TYPES, REQUEST_TYPES, RESULT_TYPES


def schemas() -> dict[str, str]:
    """File name → JSON text, one file per event type."""
    out = {}
    for event_type, model in {**REQUEST_TYPES, **RESULT_TYPES, **PROGRESS_TYPES}.items():
        schema = model.model_json_schema()
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"urn:{event_type}",
            "description": f"data of CloudEvents type {event_type}. " + schema.get("description", ""),
            **{k: v for k, v in schema.items() if k != "description"},
        }
        out[f"{event_type}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out
