"""A small SSE reader shared by the live tests."""

import asyncio

import httpx
from httpx_sse import aconnect_sse


async def read_events(base_url, count, last_event_id=None, path="/api/t/sse/resumable", timeout=8.0):
    """The first ``count`` events of ``path`` as ``(event, id, data)``, resuming after ``last_event_id``."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    out = []
    async with httpx.AsyncClient(timeout=10) as client, aconnect_sse(
        client, "GET", f"{base_url}{path}", headers=headers
    ) as source:
        async with asyncio.timeout(timeout):
            async for event in source.aiter_sse():
                out.append((event.event, event.id, event.data))
                if len(out) == count:
                    break
    return out


async def text_until(chunks, needle, timeout=5.0):
    """Read a streamed body's text chunks until ``needle`` has arrived; returns all read."""
    text = ""
    async with asyncio.timeout(timeout):
        while needle not in text:
            text += await anext(chunks)
    return text
