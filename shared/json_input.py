"""Reads JSON that comes from outside ctloop (ingest's HTTP bodies and `raw` messages), so
that every way JSON can be bad ends in one exception with a message a producer can act on.

pydantic-core's parser does the work: it is ~1.6x faster than `json` and bounds what an
input may cost (nesting deeper than 200 levels, integers longer than 4,300 digits are refused).
When it refuses, `json` is asked where the problem is (its error has the line and column)
and reads the few things pydantic-core does not (lone surrogates in strings);
`json` itself raises `RecursionError` past ~1,000 levels and `ValueError` (not a decode
error) on long integers, which once made ingest answer 500.

>>> loads_json(b'{"a": [1, 2]}')
{'a': [1, 2]}
>>> loads_json(b'[' * 300 + b']' * 300)
Traceback (most recent call last):
...
shared.json_input.MalformedJSON: malformed JSON: nested deeper than 200 levels
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import from_json

MAX_DEPTH = 200
"""pydantic-core's nesting limit (not configurable there)."""


class MalformedJSON(ValueError):
    """The input is not JSON ctloop reads; the message says what and where (`line` and
    `column` when the parser knows them, `reason` without the place)."""

    def __init__(self, reason: str, line: int | None = None, column: int | None = None) -> None:
        where = f" at line {line}, column {column}" if line is not None else ""
        super().__init__(f"malformed JSON{where}: {reason}")
        self.reason, self.line, self.column = reason, line, column


def loads_json(data: bytes | str) -> Any:
    """`data` as Python objects, or `MalformedJSON` saying what is wrong."""
    try:
        return from_json(data)
    except ValueError as exc:
        first = str(exc)
    if "recursion limit" in first:
        raise MalformedJSON(f"nested deeper than {MAX_DEPTH} levels") from None
    if "number out of range" in first:
        raise MalformedJSON(f"a number is out of range ({first})") from None
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise MalformedJSON(exc.msg, exc.lineno, exc.colno) from None
    except UnicodeDecodeError as exc:
        raise MalformedJSON(f"the input is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except (ValueError, RecursionError) as exc:
        raise MalformedJSON(f"{first} ({type(exc).__name__})") from None
