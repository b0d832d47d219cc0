"""Shared fixtures: a temporary DEEJAI_HOME and MP3 files the tests make themselves."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from tests.audiogen import make_library, write_mp3

__all__ = ["write_mp3", "make_library", "free_tcp_port"]


@pytest.fixture(autouse=True)
def deejai_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own DEEJAI_HOME and never touches the user's folders."""
    home = tmp_path_factory.mktemp("deejai-home")
    monkeypatch.setenv("DEEJAI_HOME", str(home))
    monkeypatch.delenv("DEEJAI_SOCKET", raising=False)
    monkeypatch.setenv("DEEJAI_NO_DAEMON", "")
    return home


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def mp3(tmp_path) -> Path:
    """A 6-second tagged stereo MP3 (44.1 kHz)."""
    return write_mp3(
        tmp_path / "tone.mp3",
        seconds=6.0,
        kind="chord",
        seed=1,
        tags={"artist": "Test Artist", "title": "Tone", "album": "Tests"},
    )


def free_tcp_port() -> int:
    """A loopback TCP port nothing listens on (the OS's choice, released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    return free_tcp_port()


@pytest.fixture
def daemons():
    """The ``deejai serve`` processes a test starts (``tests.test_rpc.start_daemon``); each
    is stopped when the test ends."""
    started: list = []
    yield started
    for d in started:
        d.stop()
