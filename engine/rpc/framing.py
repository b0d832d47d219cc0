"""Framing: one UTF-8 JSON-RPC 2.0 message per line, and the size limits.

A line is a whole message because JSON never needs a raw newline (newlines inside strings are
escaped). :class:`LineSplitter` cuts a byte stream into lines and discards lines longer than
the limit; :func:`dumps` writes compact one-line JSON and never ``NaN``/``Infinity``;
:func:`loads` reads it and refuses those constants and numbers out of a double's range
(``1e999``), so no reply can echo them; :func:`encode_line` turns a line into UTF-8 bytes, with
a lone surrogate (``"\\ud800"`` in a request) written as its JSON escape, so every reply is
valid UTF-8 JSON. The JSON-RPC error codes of section 5.1 of the specification
(https://www.jsonrpc.org/specification) live here too.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Iterator

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_BATCH",
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "INVALID_PARAMS",
    "INTERNAL_ERROR",
    "LineSplitter",
    "dumps",
    "loads",
    "encode_line",
    "error_line",
    "result_line",
    "notification_line",
]

#: Longest accepted line, in bytes, newline excluded.
MAX_LINE_BYTES = 1 << 20
#: Most requests in one batch.
MAX_BATCH = 100

# JSON-RPC 2.0 error codes (section 5.1 of the specification).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603


def _json_default(obj: Any) -> Any:
    """Make NumPy scalars and arrays, paths, sets and ``to_dict()`` objects serialisable."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    tolist = getattr(obj, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return tolist()
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(obj: Any) -> str:
    """Compact JSON on one line (``\\n`` inside strings is escaped, so framing is safe).

    Raises
    ------
    ValueError
        ``obj`` holds a NaN or an infinite float (they have no JSON spelling).
    TypeError
        ``obj`` holds something that is not JSON serialisable.
    """
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                      default=_json_default)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def loads(data: bytes | str) -> Any:
    """Parse one message.

    Raises
    ------
    ValueError
        Not JSON (``NaN`` and ``Infinity`` included), or a number beyond a double's range
        (``1e999``), which would otherwise read as infinity; :class:`UnicodeDecodeError` for
        bytes that are not UTF-8 (a ``ValueError`` too).
    RecursionError
        Nested too deeply.
    """
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


_SURROGATE = re.compile("[\ud800-\udfff]")


def encode_line(line: str) -> bytes:
    """``line`` (one JSON message from :func:`dumps`) plus its newline, as UTF-8 bytes.

    A lone surrogate cannot be encoded as UTF-8; it only ever sits inside a JSON string (a
    request's id, method or parameter read back from a ``\\udXXX`` escape), so it is written
    as that escape again: the line stays valid JSON and says the same thing.
    """
    try:
        return line.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", line).encode("utf-8") + b"\n"


def error_line(rid: Any, code: int, message: str, data: Any = None) -> str:
    """A JSON-RPC error reply (one line, no newline); ``data`` is dropped when it does not
    serialise."""
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    try:
        body = dumps(err)
    except (TypeError, ValueError):
        err.pop("data", None)
        body = dumps(err)
    return f'{{"jsonrpc":"2.0","id":{dumps(rid)},"error":{body}}}'


def result_line(rid: Any, result_json: str) -> str:
    """A JSON-RPC result reply around an already serialised result."""
    return f'{{"jsonrpc":"2.0","id":{dumps(rid)},"result":{result_json}}}'


def notification_line(method: str, params: Any) -> str:
    """A JSON-RPC notification (no ``id``), as the daemon sends events."""
    return dumps({"jsonrpc": "2.0", "method": method, "params": params})


class LineSplitter:
    """Cut a byte stream into lines of at most ``limit`` bytes.

    :meth:`feed` returns what the new bytes complete: each item is a line (``bytes``, newline
    removed; blank lines are skipped) or ``None`` for a line that was longer than the limit.
    An oversized line is reported once, as soon as it is known to be too long, and the rest of
    it is discarded up to its newline.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self.limit = int(limit)
        self._buf = bytearray()
        self._discarding = False

    def feed(self, chunk: bytes) -> Iterator[bytes | None]:
        buf = self._buf
        buf += chunk
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[start:nl])
            start = nl + 1
            if self._discarding:  # the tail of an oversized line
                self._discarding = False
                continue
            if len(line) > self.limit:
                yield None
                continue
            if line.strip():
                yield line
        del buf[:start]
        if len(buf) > self.limit:
            if not self._discarding:
                yield None
            self._discarding = True
            buf.clear()
