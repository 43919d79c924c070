"""The one reading of JSON that an LLM wrote: strict where possible, forgiving where models are
sloppy (code fences, chatter around the object, raw control characters inside strings)."""

from __future__ import annotations

import json
from typing import Any


def parse_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in ``text`` (code fences and chatter around it are ignored).

    Raises:
        ValueError: no JSON object in the text.
    """
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    raise ValueError("no JSON object in the answer")


def normalise_json(text: str) -> str:
    """``text`` as strict JSON when it is JSON with raw control characters inside strings.

    llama-cpp-python's schema-to-grammar converter lets a string hold a raw newline, which strict
    parsers (``json.loads``, pydantic) reject; such text is re-serialised. Text that is already
    strict JSON, or not JSON at all (e.g. cut off by ``max_tokens``), is returned unchanged.
    """
    try:
        json.loads(text)
        return text
    except ValueError:
        pass
    try:
        return json.dumps(json.loads(text, strict=False), ensure_ascii=False)
    except ValueError:
        return text
