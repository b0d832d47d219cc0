"""The daemon's protocol: JSON-RPC 2.0 over a local socket, server and client.

``deejai serve`` runs a :class:`Server` around one :class:`~deejai.engine.service.Engine`;
front ends talk to it through a :class:`Client`, which has the same method names, keyword
parameters and results as the Engine and raises the same
:class:`~deejai.engine.errors.DeejaiError` subclasses. ``docs/protocol.md`` is the contract.
The package, one job per module:

``framing``
    one UTF-8 JSON message per line, the 1 MiB line limit, the JSON-RPC error codes;
``transport``
    addresses, the Unix socket, loopback TCP with a token, systemd socket activation;
``dispatch``
    the :class:`Dispatcher` (a line in, a line out, over the Engine's method table; no
    transport inside), the built-in methods, and an in-process transport;
``connection``
    one socket connection of the daemon: back pressure, slow peers, authentication;
``server``
    :class:`Server`, the :class:`DaemonLock` (one daemon per library), signals, shutdown,
    and :func:`serve`;
``client``
    :class:`Client`, whose methods come from the method table;
``connect``
    :func:`connect`, the one policy every front end uses: the daemon when it answers, else
    start one or run the engine in process.

The JSON-RPC 2.0 specification: https://www.jsonrpc.org/specification
"""
from __future__ import annotations

from deejai.engine.rpc.client import Client, SocketTransport
from deejai.engine.rpc.connect import connect, daemon_command, is_remote, spawn_daemon
from deejai.engine.rpc.connection import WRITE_TIMEOUT_S
from deejai.engine.rpc.dispatch import (
    BUILTIN_METHODS,
    BUILTIN_TABLE,
    PROTOCOL_VERSION,
    Dispatcher,
    FairLane,
    InProcessTransport,
    Session,
)
from deejai.engine.rpc.framing import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_BATCH,
    MAX_LINE_BYTES,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)
from deejai.engine.rpc.server import (
    AUTH_TIMEOUT_S,
    MAX_CONNECTIONS,
    MAX_IN_FLIGHT,
    MAX_UNAUTHENTICATED,
    QUEUE_SIZE,
    DaemonLock,
    Server,
    serve,
)
from deejai.engine.rpc.transport import (
    Address,
    candidate_addresses,
    lock_file,
    parse_address,
    read_daemon_info,
    token_file,
)

__all__ = [
    "connect",
    "is_remote",
    "spawn_daemon",
    "daemon_command",
    "Server",
    "Client",
    "Dispatcher",
    "FairLane",
    "InProcessTransport",
    "SocketTransport",
    "Session",
    "DaemonLock",
    "Address",
    "parse_address",
    "serve",
    "read_daemon_info",
    "candidate_addresses",
    "token_file",
    "lock_file",
    "PROTOCOL_VERSION",
    "MAX_LINE_BYTES",
    "MAX_BATCH",
    "MAX_IN_FLIGHT",
    "MAX_CONNECTIONS",
    "MAX_UNAUTHENTICATED",
    "QUEUE_SIZE",
    "AUTH_TIMEOUT_S",
    "WRITE_TIMEOUT_S",
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "INVALID_PARAMS",
    "INTERNAL_ERROR",
    "BUILTIN_METHODS",
    "BUILTIN_TABLE",
]
