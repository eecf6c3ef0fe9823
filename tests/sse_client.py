"""A small SSE reader shared by the live tests."""

from __future__ import annotations

import asyncio
import json

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


class SSE:
    """An SSE stream read event by event, in the background, through httpx."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = headers or {}
        self.events: asyncio.Queue[dict] = asyncio.Queue()
        self.response: httpx.Response | None = None
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(10, read=None))
        self._task: asyncio.Task | None = None
        self._opened = asyncio.Event()

    async def __aenter__(self) -> SSE:
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self._opened.wait(), 10)
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._client.aclose()

    async def _read(self) -> None:
        async with self._client.stream("GET", self.url, headers=self.headers) as response:
            self.response = response
            self._opened.set()
            event: dict = {}
            async for line in response.aiter_lines():
                if line == "":
                    if "data" in event:
                        await self.events.put(event)
                    event = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    event[name] = value[1:] if value.startswith(" ") else value

    async def next(self, timeout: float = 10) -> dict:
        event = await asyncio.wait_for(self.events.get(), timeout)
        return {**event, "data": json.loads(event["data"])}
