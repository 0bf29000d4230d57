"""JSON schemas for structured decoding (``response_format``, tool parameters): plain Python."""

from __future__ import annotations

import json
import re


def json_schema_error(schema: str) -> str | None:
    """Why a JSON schema is invalid or cannot be compiled by xgrammar (vLLM's structured-output
    backend here), or None when it can be used."""
    import jsonschema
    import xgrammar

    try:
        jsonschema.validators.validator_for(json.loads(schema)).check_schema(json.loads(schema))
        xgrammar.Grammar.from_json_schema(schema)
    except Exception as exc:  # noqa: BLE001 - every failure is the client's schema
        return re.sub(r"^(\[[^]]*\] )?\S+\.cc:\d+: ", "", str(exc).splitlines()[0])[:300]
    return None
