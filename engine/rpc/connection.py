"""One client connection of the daemon: reading lines, back pressure, slow peers, auth.

A :class:`Connection` reads the socket in chunks through a
:class:`~deejai.engine.rpc.framing.LineSplitter`, hands each line to the server's
:class:`~deejai.engine.rpc.dispatch.Dispatcher` (at most ``max_in_flight`` at a time), and
writes replies and notifications from a bounded queue. ``scan.progress`` notifications that do
not fit the queue are dropped (the next one supersedes them), any other line that does not fit
closes the connection, and a peer that does not read for :data:`WRITE_TIMEOUT_S` seconds is
disconnected, so a slow client never slows the others. A TCP connection must authenticate
with ``engine.auth`` first.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from deejai.engine.errors import AuthenticationFailed
from deejai.engine.rpc.dispatch import Session
from deejai.engine.rpc.framing import INVALID_REQUEST, LineSplitter, dumps, error_line, loads

if TYPE_CHECKING:  # pragma: no cover
    from deejai.engine.rpc.server import Server

__all__ = ["Connection", "WRITE_TIMEOUT_S", "READ_CHUNK"]

log = logging.getLogger("deejai.engine.rpc")

#: Seconds a peer may leave written data unread before it is disconnected.
WRITE_TIMEOUT_S = 30.0
#: Bytes read from a socket at a time.
READ_CHUNK = 1 << 16


class Connection(Session):
    """One client connection: a reader loop, request tasks, and a writer draining a queue."""

    _ids = itertools.count(1)

    def __init__(self, server: "Server", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, *, needs_auth: bool, label: str):
        super().__init__(f"#{next(self._ids)} {label}", authenticated=not needs_auth,
                         stop=server.request_stop_soon)
        self.server = server
        self.reader = reader
        self.writer = writer
        self.out: asyncio.Queue[bytes | None] = asyncio.Queue(server.queue_size)
        self.inflight = asyncio.Semaphore(server.max_in_flight)
        self.tasks: set[asyncio.Task] = set()
        self.closed = False
        self.dropped = 0
        self.writer_task: asyncio.Task | None = None

    # -- output
    async def send(self, line: str) -> None:
        """Queue a reply line, waiting for room (back pressure on this connection only)."""
        if not self.closed:
            await self.out.put(line.encode("utf-8") + b"\n")

    def notify(self, event: str, line: bytes) -> None:
        """Queue a notification without waiting; see the module docstring for overflow."""
        if self.closed:
            return
        try:
            self.out.put_nowait(line)
        except asyncio.QueueFull:
            if event == "scan.progress":
                self.dropped += 1
                return
            log.warning("connection %s: outgoing queue full, disconnecting", self.label)
            self.abort()

    async def _write_loop(self) -> None:
        try:
            while True:
                item = await self.out.get()
                if item is None:
                    break
                self.writer.write(item)
                if self.out.empty() or self.writer.transport.get_write_buffer_size() > (1 << 20):
                    await asyncio.wait_for(self.writer.drain(), WRITE_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("connection %s: peer does not read, disconnecting", self.label)
            self.abort()
        except (ConnectionError, OSError):
            self.abort()

    def abort(self) -> None:
        """Drop the connection now (unsent lines are lost)."""
        self.closed = True
        try:
            self.writer.transport.abort()
        except Exception:  # pragma: no cover - already gone
            pass
        current = asyncio.current_task()
        for task in list(self.tasks):  # requests blocked on a full queue would wait forever
            if task is not current:
                task.cancel()
        if self.writer_task is not None and self.writer_task is not asyncio.current_task():
            self.writer_task.cancel()

    # -- input
    async def run(self) -> None:
        self.writer_task = asyncio.create_task(self._write_loop())
        try:
            await self._read_loop()
        except (ConnectionError, OSError):
            pass
        finally:
            if self.tasks and not self.closed:
                # The peer may have half-closed after its last request: answer it first.
                await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.close()

    async def _read_chunk(self, deadline: float | None) -> bytes:
        if deadline is None:
            return await self.reader.read(READ_CHUNK)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise asyncio.TimeoutError
        return await asyncio.wait_for(self.reader.read(READ_CHUNK), remaining)

    async def _read_loop(self) -> None:
        splitter = LineSplitter(self.server.max_line_bytes)
        deadline = None if self.authenticated else time.monotonic() + self.server.auth_timeout_s
        while not self.closed:
            try:
                chunk = await self._read_chunk(None if self.authenticated else deadline)
            except asyncio.TimeoutError:
                await self.send(error_line(None, AuthenticationFailed.code,
                                           "unauthorised: no engine.auth within "
                                           f"{self.server.auth_timeout_s:g} s"))
                return
            if not chunk:
                return
            for line in splitter.feed(chunk):
                if line is None:
                    await self._too_long()
                    continue
                if not self.authenticated:
                    if not await self._authenticate(line):
                        return
                    continue
                await self.inflight.acquire()
                if self.closed:
                    self.inflight.release()
                    return
                task = asyncio.create_task(self._handle(line))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _too_long(self) -> None:
        limit = self.server.max_line_bytes
        log.info("connection %s: line over %d bytes discarded", self.label, limit)
        await self.send(error_line(
            None, INVALID_REQUEST, f"request line longer than {limit} bytes; it was discarded",
            {"limit_bytes": limit},
        ))

    async def _authenticate(self, line: bytes) -> bool:
        rid: Any = None
        ok = False
        try:
            msg = loads(line)
            if isinstance(msg, dict):
                rid = msg.get("id") if isinstance(msg.get("id"), (str, int, float)) else None
                params = msg.get("params")
                token = params.get("token") if isinstance(params, dict) else (
                    params[0] if isinstance(params, list) and params else None)
                ok = (msg.get("method") == "engine.auth" and isinstance(token, str)
                      and secrets.compare_digest(token.encode("utf-8"),
                                                 self.server.token.encode("utf-8")))
        except (ValueError, UnicodeDecodeError, RecursionError):
            ok = False
        if ok:
            self.authenticated = True
            await self.send(f'{{"jsonrpc":"2.0","id":{dumps(rid)},"result":true}}')
            return True
        log.warning("connection %s: unauthorised", self.label)
        await self.send(error_line(rid, AuthenticationFailed.code,
                                   "unauthorised: call engine.auth with the daemon's token first"))
        return False

    async def _handle(self, line: bytes) -> None:
        try:
            reply = await self.server.dispatcher.handle_line(line, self)
            if reply is not None:
                await self.send(reply)
        finally:
            self.inflight.release()

    async def close(self, timeout: float = 2.0) -> None:
        """Flush what is queued (up to ``timeout`` seconds), then close the socket."""
        self.server._connections.discard(self)
        if not self.closed:
            self.closed = True
            try:
                self.out.put_nowait(None)
            except asyncio.QueueFull:
                self.abort()
            if self.writer_task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self.writer_task), timeout)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    self.abort()
        if self.writer_task is not None and not self.writer_task.done():
            self.writer_task.cancel()
        try:
            self.writer.close()
        except Exception:  # pragma: no cover
            pass
        if self.dropped:
            log.info("connection %s: %d progress notifications dropped", self.label,
                     self.dropped)
        log.debug("connection %s closed", self.label)
