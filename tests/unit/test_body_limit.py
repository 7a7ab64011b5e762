"""The body limit as ASGI sees it: a length over the limit (or one too long to be a number)
is a 413 before the app runs, a chunked body is cut off as it passes the limit."""

from __future__ import annotations

import asyncio
from typing import Any

from shared.http import BodyLimit


def _call(headers: list[tuple[bytes, bytes]], chunks: list[bytes], limit: int = 10) -> tuple[int, bool]:
    """(the status sent, whether the app ran) for a POST with `headers` and body `chunks`."""
    sent: list[dict[str, Any]] = []
    ran = []
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        ran.append(True)
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": headers}
    asyncio.run(BodyLimit(app, max_bytes=limit)(scope, receive, send))  # type: ignore[arg-type]
    return sent[0]["status"], bool(ran)


def test_a_length_over_the_limit_is_refused_before_the_app_runs() -> None:
    assert _call([(b"content-length", b"11")], [b"x" * 11]) == (413, False)
    assert _call([(b"content-length", b"9" * 5000)], [b""]) == (413, False)  # not a 500 from int()
    assert _call([(b"content-length", b"10")], [b"x" * 10]) == (200, True)


def test_a_chunked_body_is_cut_off_as_it_passes_the_limit() -> None:
    assert _call([], [b"x" * 6, b"x" * 6, b"x" * 6]) == (413, True)
    assert _call([], [b"x" * 5, b"x" * 5]) == (200, True)
