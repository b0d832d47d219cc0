"""Transports: where a daemon listens and how a client reaches it.

* a **Unix domain socket** (the default, ``<runtime dir>/deejai.sock``; folder 0700, socket
  0600, so only its owner can connect);
* **TCP on a loopback address** (``127.0.0.1``, ``::1``), for systems without Unix sockets;
  the client authenticates with the token the daemon keeps in ``<runtime dir>/deejai.token``;
* a socket handed over by **systemd** (socket activation, ``sd_listen_fds``).

The client side: :func:`candidate_addresses` says where to look (``DEEJAI_SOCKET``, the default
socket, what the daemon recorded in its lock file) and :func:`open_socket` connects. The
framing is :mod:`.framing`; the messages are :mod:`.dispatch`'s.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deejai.engine.config import Paths, paths as default_paths
from deejai.engine.errors import ConfigError, DaemonError, DaemonNotRunning

__all__ = [
    "Address",
    "parse_address",
    "lock_file",
    "token_file",
    "read_token",
    "read_daemon_info",
    "read_info_at",
    "candidate_addresses",
    "probe_unix",
    "bind_unix",
    "systemd_socket",
    "check_activated_socket",
    "open_socket",
]

log = logging.getLogger("deejai.engine.rpc")


@dataclass(frozen=True)
class Address:
    """Where a daemon listens: a Unix socket path or a loopback TCP host and port."""

    kind: str  # "unix" or "tcp"
    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        if self.kind == "tcp":
            host = f"[{self.host}]" if self.host and ":" in self.host else self.host
            return f"tcp://{host}:{self.port}"
        return str(self.path)


def _loopback_host(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{host!r}: give a loopback IP address such as 127.0.0.1") from None
    if not ip.is_loopback:
        raise ConfigError(
            f"{host}: the daemon listens on loopback addresses only (127.0.0.1 or ::1)"
        )
    return str(ip)


def parse_address(text: str | os.PathLike, *, tcp: bool | None = None) -> Address:
    """Parse a daemon address.

    Parameters
    ----------
    text : str or path
        ``tcp://HOST:PORT``, ``HOST:PORT`` (with ``tcp=True``), ``unix:PATH`` or a socket path.
    tcp : bool, optional
        True to read ``HOST:PORT`` without the ``tcp://`` prefix.

    Returns
    -------
    Address

    Raises
    ------
    ConfigError
        When the port is not a number or the host is not a loopback address (a daemon is
        never reachable from another machine).
    """
    s = os.fspath(text)
    if s.startswith("tcp://"):
        s, tcp = s[6:], True
    elif s.startswith("unix://"):
        return Address("unix", path=s[7:])
    elif s.startswith("unix:"):
        return Address("unix", path=s[5:])
    if not tcp:
        return Address("unix", path=s)
    host, sep, port = s.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:6601")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port_no = int(port)
    except ValueError:
        raise ConfigError(f"{text!r}: the port must be a number") from None
    if not 0 <= port_no <= 65535:
        raise ConfigError(f"{text!r}: the port must be between 0 and 65535")
    return Address("tcp", host=_loopback_host(host), port=port_no)


def lock_file(p: Paths | None = None) -> Path:
    """``<data dir>/daemon.lock``: held by the running daemon, records its pid and addresses."""
    return (p or default_paths()).data_dir / "daemon.lock"


def token_file(p: Paths | None = None) -> Path:
    """``<runtime dir>/deejai.token``: the TCP authentication token (mode 0600)."""
    return (p or default_paths()).runtime_dir / "deejai.token"


def read_token(p: Paths | None = None) -> str | None:
    """The token of the running TCP daemon, or None when there is no token file."""
    try:
        return token_file(p).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def read_info_at(path: Path | str) -> dict[str, Any] | None:
    """The JSON object a daemon lock file holds, or None (missing, empty or not JSON)."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
        info = json.loads(text) if text else None
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def read_daemon_info(p: Paths | None = None) -> dict[str, Any] | None:
    """What the running (or last) daemon recorded in its lock file, or None.

    Returns
    -------
    dict or None
        ``{"pid": int, "socket": str or None, "tcp": "tcp://127.0.0.1:PORT" or None,
        "started_at": float}``; None when there is no lock file or it is empty.
    """
    return read_info_at(lock_file(p))


def candidate_addresses(p: Paths | None = None) -> list[str]:
    """Where a client looks for the daemon, in order (as MPD clients do with ``MPD_HOST``).

    ``DEEJAI_SOCKET`` alone when it is set (a path, or ``tcp://127.0.0.1:PORT``); else the
    default socket ``<runtime dir>/deejai.sock``, then the addresses the running daemon
    recorded in its lock file (a ``--socket`` elsewhere, or its TCP port).
    """
    env = os.environ.get("DEEJAI_SOCKET")
    if env:
        return [env]
    p = p or default_paths()
    out = [str(p.socket_file)]
    info = read_daemon_info(p) or {}
    for key in ("socket", "tcp"):
        value = info.get(key)
        if isinstance(value, str) and value and value not in out:
            out.append(value)
    return out


def probe_unix(path: str, timeout: float = 0.5) -> bool:
    """True when something accepts connections on the Unix socket ``path``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def bind_unix(path: str) -> socket.socket:
    """A listening, non-blocking Unix socket at ``path``, born with mode 0600.

    The folder is created with mode 0700 when missing. A stale socket (nothing answers on it,
    as after ``kill -9``) is replaced.

    Raises
    ------
    ConfigError
        ``path`` exists and is not a socket, or cannot be bound.
    DaemonError
        Another process answers on ``path``.
    """
    parent = Path(path).parent
    if not parent.exists():
        parent.mkdir(parents=True, mode=0o700)
        os.chmod(parent, 0o700)
    if os.path.lexists(path):
        mode = os.lstat(path).st_mode
        if not stat.S_ISSOCK(mode):
            raise ConfigError(f"{path} exists and is not a socket; remove it or choose "
                              "another --socket")
        if probe_unix(path):
            raise DaemonError(f"another process already answers on {path}")
        log.info("removing stale socket %s", path)
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is born 0600: no window with looser modes
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def systemd_socket() -> socket.socket | None:
    """The listening socket systemd passed (socket activation, ``sd_listen_fds``), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        n = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    if n < 1:
        return None
    sock = socket.socket(fileno=3)  # SD_LISTEN_FDS_START
    sock.setblocking(False)
    return sock


def check_activated_socket(sock: socket.socket) -> Address | None:
    """Apply ``--tcp``'s rules to a socket systemd passed; returns its TCP address, if TCP.

    A Unix socket is served as it is (systemd made it; its mode is the access control). A TCP
    one must be a listening stream socket bound to a loopback address, like ``--tcp``; the
    daemon then writes the token file and every connection must authenticate.

    Raises
    ------
    ConfigError
        The socket is not a stream socket, or is TCP bound to an address other machines can
        reach (``ListenStream=6601`` or ``0.0.0.0:6601``).
    """
    if sock.type != socket.SOCK_STREAM:
        raise ConfigError("the socket systemd passed is not a stream socket: use ListenStream= "
                          "in deejai.socket")
    if sock.family == getattr(socket, "AF_UNIX", None):
        return None
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise ConfigError(f"the socket systemd passed has an unknown family {sock.family!r}")
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        loopback = ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:  # pragma: no cover - getsockname gives numeric addresses
        loopback = False
    if not loopback:
        raise ConfigError(
            f"systemd passed a TCP socket on {shown}: the daemon listens on loopback addresses "
            f"only; set ListenStream=127.0.0.1:{port} in deejai.socket"
        )
    return Address("tcp", host=host, port=port)


def open_socket(address: Address, *, timeout: float) -> socket.socket:
    """A connected, blocking client socket to ``address``.

    Raises
    ------
    DaemonNotRunning
        When nothing accepts the connection (no socket file, a stale one, a closed port).
    """
    try:
        if address.kind == "unix":
            if not hasattr(socket, "AF_UNIX"):  # pragma: no cover - Windows
                raise DaemonNotRunning(f"{address}: Unix sockets are not available here")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(address.path)
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection((address.host, address.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        raise DaemonNotRunning(f"{address}: {exc.strerror or exc}") from None
    sock.settimeout(None)
    return sock
