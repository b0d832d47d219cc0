"""One client connection of the daemon: reading lines, back pressure, slow peers, auth.

A :class:`Connection` reads the socket in chunks through a
:class:`~deejai.engine.rpc.framing.LineSplitter`, hands each line to the server's
:class:`~deejai.engine.rpc.dispatch.Dispatcher` (at most ``max_in_flight`` lines, and as many
requests, batch members counted one by one, at a time), and writes replies and notifications
from a bounded queue. ``scan.progress`` notifications that do not fit the queue are dropped
(the next one supersedes them), any other line that does not fit closes the connection, and a
peer that does not read for :data:`WRITE_TIMEOUT_S` seconds is disconnected, so a slow client
never slows the others.

A TCP connection must authenticate with ``engine.auth`` first, on a small budget of its own
(see :class:`deejai.engine.rpc.server.Server`): its first line may be at most
:data:`AUTH_LINE_BYTES` long and must come within the server's ``auth_timeout_s``, and until
then the connection is one of the server's few unauthenticated ones, not one of its
connections. A failed attempt is reported to the server's :class:`AuthGuard`, which says
whether to answer it and logs the failures once per interval.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from deejai.engine.errors import AuthenticationFailed, DaemonError
from deejai.engine.rpc.dispatch import Session
from deejai.engine.rpc.framing import (
    INVALID_REQUEST,
    LineSplitter,
    dumps,
    encode_line,
    error_line,
    loads,
)

if TYPE_CHECKING:  # pragma: no cover
    from deejai.engine.rpc.server import Server

__all__ = ["Connection", "AuthGuard", "WRITE_TIMEOUT_S", "READ_CHUNK", "AUTH_LINE_BYTES",
           "AUTH_FAILURE_BURST", "AUTH_FAILURES_PER_S", "AUTH_LOG_INTERVAL_S"]

log = logging.getLogger("deejai.engine.rpc")

#: Seconds a peer may leave written data unread before it is disconnected.
WRITE_TIMEOUT_S = 30.0
#: Bytes read from a socket at a time.
READ_CHUNK = 1 << 16
#: Longest first line of a TCP connection that has not authenticated (an ``engine.auth``
#: request with a 43-character token is about 100 bytes).
AUTH_LINE_BYTES = 4096
#: Failed authentications of one peer host that are answered in a burst ...
AUTH_FAILURE_BURST = 10
#: ... and per second after it; beyond that, failing connections are closed unanswered.
AUTH_FAILURES_PER_S = 1.0
#: Seconds between two log lines about a peer's failed authentications.
AUTH_LOG_INTERVAL_S = 60.0


class AuthGuard:
    """Failed TCP authentications, per peer host: which to answer, and what to log.

    Each host has a token bucket (:data:`AUTH_FAILURE_BURST` answers, refilled at
    :data:`AUTH_FAILURES_PER_S` per second): a failure with a token left is answered with
    -32061; one without is closed at once, unanswered and unlogged. The token of every
    attempt is still checked, so the right one is accepted whatever others do: someone else's
    failures never lock the owner out, and the 256-bit token is what keeps a guesser out.

    The log gets the first failure of a host at once, then one line per
    :data:`AUTH_LOG_INTERVAL_S` with the count (:meth:`flush`, which the server calls on a
    timer and at shutdown), never one line per attempt.
    """

    #: Hosts remembered at most (loopback has 2**24 addresses to come from).
    MAX_HOSTS = 1024

    def __init__(self, *, burst: int = AUTH_FAILURE_BURST,
                 per_s: float = AUTH_FAILURES_PER_S,
                 log_interval_s: float = AUTH_LOG_INTERVAL_S) -> None:
        self.burst = float(burst)
        self.per_s = float(per_s)
        self.log_interval_s = float(log_interval_s)
        self._buckets: dict[str, tuple[float, float]] = {}  # host -> (tokens, when)
        self._counts: dict[str, list[int]] = {}  # host -> [failures, unanswered] not yet logged
        self._logged: dict[str, float] = {}  # host -> when its last line was logged

    def failed(self, host: str, label: str, reason: str) -> bool:
        """Count a failure of ``host``; True when it should be answered."""
        now = time.monotonic()
        tokens, when = self._buckets.get(host, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.per_s)
        answer = tokens >= 1.0
        if answer:
            tokens -= 1.0
        if host not in self._buckets and len(self._buckets) >= self.MAX_HOSTS:
            self._forget(now)
        self._buckets[host] = (tokens, now)
        counts = self._counts.setdefault(host, [0, 0])
        counts[0] += 1
        counts[1] += not answer
        last = self._logged.get(host)
        if last is None:
            log.warning("connection %s: authentication failed (%s); further failures from %s "
                        "are counted and logged every %g s", label, reason, host,
                        self.log_interval_s)
            self._counts.pop(host)
            self._logged[host] = now
        elif now - last >= self.log_interval_s:
            self._log(host, now)
        return answer

    def _log(self, host: str, now: float) -> None:
        failures, unanswered = self._counts.pop(host, (0, 0))
        if failures:
            since = now - self._logged.get(host, now)
            log.warning("%d failed authentication%s from %s in the last %.0f s (%d closed "
                        "unanswered)", failures, "s" * (failures != 1), host, since, unanswered)
        self._logged[host] = now

    def flush(self) -> None:
        """Log what was counted since each host's last line."""
        now = time.monotonic()
        for host in list(self._counts):
            self._log(host, now)

    def _forget(self, now: float) -> None:
        """Drop hosts whose bucket is full again (they owe nothing), or else the oldest."""
        full = [h for h, (t, w) in self._buckets.items()
                if t + (now - w) * self.per_s >= self.burst and h not in self._counts]
        for host in full or sorted(self._buckets, key=lambda h: self._buckets[h][1])[:64]:
            self._buckets.pop(host, None)
            self._logged.pop(host, None)
            self._counts.pop(host, None)


class Connection(Session):
    """One client connection: a reader loop, request tasks, and a writer draining a queue."""

    _ids = itertools.count(1)

    def __init__(self, server: "Server", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, *, needs_auth: bool, label: str,
                 host: str = ""):
        super().__init__(f"#{next(self._ids)} {label}", authenticated=not needs_auth,
                         stop=server.request_stop_soon,
                         request_slots=asyncio.Semaphore(server.max_in_flight))
        self.server = server
        self.host = host
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
            await self.out.put(encode_line(line))

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

    def evict(self, message: str) -> None:
        """Close a connection that has not authenticated, telling it why (-32061)."""
        try:
            self.writer.transport.write(encode_line(error_line(
                None, AuthenticationFailed.code, message)))
            self.writer.transport.close()  # sends what was written, then closes
        except Exception:  # pragma: no cover - already gone
            pass

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

    async def _first_line(self) -> tuple[bytes, bytes] | None:
        """The first non-blank line of an unauthenticated connection and what follows it;
        None (after telling the peer why, where it should be told) when it is too long, too
        late, or the peer went away."""
        limit = AUTH_LINE_BYTES
        deadline = time.monotonic() + self.server.auth_timeout_s
        buf = b""
        while True:
            nl = buf.find(b"\n")
            while 0 <= nl and not buf[:nl].strip():  # blank lines before it are skipped
                buf = buf[nl + 1:]
                nl = buf.find(b"\n")
            if nl >= 0 and nl <= limit:
                return buf[:nl], buf[nl + 1:]
            if len(buf) > limit:
                if self._auth_failed("first line too long"):
                    await self.send(error_line(None, AuthenticationFailed.code,
                                               f"unauthorised: the first line is over {limit} "
                                               "bytes; send engine.auth first"))
                else:
                    self.abort()
                return None
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise asyncio.TimeoutError
                chunk = await asyncio.wait_for(self.reader.read(limit + 1 - len(buf)),
                                               remaining)
            except asyncio.TimeoutError:
                await self.send(error_line(None, AuthenticationFailed.code,
                                           "unauthorised: no engine.auth within "
                                           f"{self.server.auth_timeout_s:g} s"))
                return None
            if not chunk:
                return None
            buf += chunk

    async def _read_loop(self) -> None:
        splitter = LineSplitter(self.server.max_line_bytes)
        pending: list[bytes | None] = []
        if not self.authenticated:
            first = await self._first_line()
            if first is None or not await self._authenticate(first[0]):
                return
            pending = list(splitter.feed(first[1]))
        while not self.closed:
            if pending:
                lines, pending = pending, []
            else:
                chunk = await self.reader.read(READ_CHUNK)
                if not chunk:
                    return
                lines = list(splitter.feed(chunk))
            for line in lines:
                if line is None:
                    await self._too_long()
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

    def _auth_failed(self, reason: str) -> bool:
        """Report a failure to the server's guard; True when the peer should be answered."""
        return self.server.auth_guard.failed(self.host, self.label, reason)

    async def _authenticate(self, line: bytes) -> bool:
        """Check the first line: ``engine.auth`` with the token, or the connection ends.

        A request gets ``true`` or -32061; a notification (no ``id``) gets no reply either
        way, as JSON-RPC wants; a line that is not JSON gets -32061 with a null id.
        """
        rid: Any = None
        notification = False
        ok = False
        reason = "not JSON"
        try:
            msg = loads(line)
            if isinstance(msg, dict):
                notification = "id" not in msg
                rid = msg.get("id") if isinstance(msg.get("id"), (str, int, float)) and not \
                    isinstance(msg.get("id"), bool) else None
                params = msg.get("params")
                token = params.get("token") if isinstance(params, dict) else (
                    params[0] if isinstance(params, list) and params else None)
                if msg.get("method") != "engine.auth":
                    reason = "the first message was not engine.auth"
                elif not isinstance(token, str):
                    reason = "no token"
                else:
                    ok = secrets.compare_digest(token.encode("utf-8", "surrogatepass"),
                                                self.server.token.encode("utf-8"))
                    reason = "wrong token"
            else:
                reason = "the first message was not a request object"
        except (ValueError, UnicodeDecodeError, RecursionError):
            ok = False
        if ok:
            refusal = self.server.authenticated(self)
            if refusal is not None:
                await self.send(error_line(rid, DaemonError.code, refusal))
                return False
            self.authenticated = True
            if not notification:
                await self.send(f'{{"jsonrpc":"2.0","id":{dumps(rid)},"result":true}}')
            return True
        if self._auth_failed(reason) and not notification:
            await self.send(error_line(rid, AuthenticationFailed.code,
                                       "unauthorised: call engine.auth with the daemon's token "
                                       "first"))
        elif not notification:
            self.abort()  # over this peer's budget: closed at once, unanswered
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
