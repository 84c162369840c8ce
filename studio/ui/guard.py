"""What a public server enforces around Gradio itself, before any handler runs: each visitor's share of the queue,
and the uploads' count and disk budget (issue 22 #6, #12). No torch here.

* **Queue share** (`share_queue`): Gradio's queue holds `--max-queue` events for everyone; one client with many
  sessions filled all its slots. Each visitor (a browser session, or a client address, whichever is hit first) may
  have at most `max_waiting` events waiting; the next is refused with Gradio's "queue full" answer and a message
  saying why. The running event does not count.
* **Uploads** (`UploadGuard`, an ASGI middleware on Gradio's upload route): at most `max_files` files and
  `max_request_bytes` in one upload request, and at most `budget_bytes` in Gradio's cache folder in all (uploads
  and served files; the sweeper deletes what is older than the TTL): an upload past the budget is refused (HTTP
  507), never stored. The counts are taken while the request streams in, so nothing past a bound is written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("studio.guard")
MB = 1024 * 1024  # as `--max-upload-mb` counts


# ------------------------------------------------------------------------------------------------ queue share
def visitor_address(request: Any) -> str:
    """The visitor's address: on a Hugging Face Space (behind its proxy, `SPACE_ID` set) the first address of
    X-Forwarded-For, which the proxy sets; elsewhere the connection's peer (a header a client sends itself would let
    it pose as many visitors)."""
    if request is None:
        return ""
    if os.environ.get("SPACE_ID"):
        forwarded = request.headers.get("x-forwarded-for", "")
        if forwarded.strip():
            return forwarded.split(",")[0].strip()
    client = getattr(request, "client", None)
    return getattr(client, "host", "") or ""


def share_queue(demo: Any, max_waiting: int) -> None:
    """Let each visitor have at most `max_waiting` events waiting in `demo`'s queue (call after `demo.queue()`,
    which makes a new queue). A refused join is answered with HTTP 400 and our message (as "queue_full", Gradio's client
    would replace it by "Queue is full! Please try again.")."""
    queue = demo._queue
    push = queue.push
    lock = asyncio.Lock()

    async def push_shared(body: Any, request: Any, username: str | None):
        async with lock:  # the count and the insertion together: a burst of joins cannot all pass the count
            session, address = body.session_hash, visitor_address(request)
            waiting = [e for q in list(queue.event_queue_per_concurrency_id.values()) for e in list(q.queue)]
            mine = sum(1 for e in waiting if (session and e.session_hash == session)
                       or (address and visitor_address(e.request) == address))
            if mine >= max_waiting:
                log.info("queue share: refused a job from %s (%d waiting, at most %d per visitor)", address or "?",
                         mine, max_waiting)
                return (False, f"You already have {mine} jobs waiting on this server, which queues at most "
                               f"{max_waiting} per visitor; wait for one to finish.", "error")
            return await push(body, request, username)

    queue.push = push_shared


# ---------------------------------------------------------------------------------------------------- uploads
class UploadRefused(Exception):
    pass


class UploadGuard:
    """ASGI middleware bounding Gradio's upload route (see the module's docstring). `folder()` gives Gradio's cache
    folder, whose size is measured at most once a second (plus what is streaming in now)."""

    ROUTE = "/gradio_api/upload"

    def __init__(self, app: Callable, *, max_files: int, max_request_bytes: int, budget_bytes: int | None,
                 folder: Callable[[], Path]):
        self.app = app
        self.max_files, self.max_request_bytes, self.budget_bytes = max_files, max_request_bytes, budget_bytes
        self.folder = folder
        self._lock = threading.Lock()
        self._measured: tuple[float, int] = (-1.0, 0)
        self._incoming = 0  # bytes of uploads streaming in now

    def stored(self) -> int:
        """Bytes in the cache folder (re-measured at most once a second)."""
        with self._lock:
            at, size = self._measured
            if time.monotonic() - at < 1.0:
                return size
        size = folder_bytes(self.folder())
        with self._lock:
            self._measured = (time.monotonic(), size)
        return size

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope["path"].endswith(self.ROUTE):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        length = headers.get("content-length", "")
        problem = None
        if not length.isdigit():
            problem = (411, "uploads must say their length (Content-Length)")
        elif int(length) > self.max_request_bytes:
            problem = (413, f"one upload may carry at most {self.max_request_bytes / MB:.3g} MB, got "
                            f"{int(length) / MB:.3g} MB")
        elif self.budget_bytes is not None and self.stored() + self._incoming + int(length) > self.budget_bytes:
            problem = (507, f"this server's upload space ({self.budget_bytes / MB:.3g} MB) is full; try again later "
                            "(uploads are deleted when their run ends, or after the server's time to live)")
        if problem is not None:
            log.info("upload refused: %s", problem[1])
            return await _plain(send, *problem)
        boundary = _boundary(headers.get("content-type", ""))
        marker = b"--" + boundary if boundary else None
        state = {"parts": 0, "bytes": 0, "tail": b""}
        with self._lock:
            self._incoming += int(length)

        async def counted_receive():
            message = await receive()
            if message.get("type") == "http.request":
                body = message.get("body", b"")
                state["bytes"] += len(body)
                if marker is not None:
                    window = state["tail"] + body
                    state["parts"] += window.count(marker) - state["tail"].count(marker)
                    state["tail"] = window[-(len(marker) - 1):] if len(marker) > 1 else b""
                # parts: one boundary before each part, and the closing one
                if state["parts"] - 1 > self.max_files or state["bytes"] > self.max_request_bytes:
                    from gradio.route_utils import MultiPartException

                    log.info("upload refused: more than %d files or %d bytes in one request", self.max_files,
                             self.max_request_bytes)
                    # Gradio's parser deletes what it wrote and answers 400 with this message
                    raise MultiPartException(f"Too many files: one upload may carry at most {self.max_files}")
            return message

        try:
            await self.app(scope, counted_receive, send)
        finally:
            with self._lock:
                self._incoming -= int(length)
                self._measured = (-1.0, 0)  # measure again: this upload is stored now, or gone


def _boundary(content_type: str) -> bytes | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    return None


async def _plain(send, status: int, text: str) -> None:
    body = text.encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under `folder` (0 when it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total
