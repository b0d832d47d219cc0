"""Numbers for people: one way to write a duration, for every front end."""
from __future__ import annotations

import math

__all__ = ["format_duration"]


def format_duration(seconds: float | None, unknown: str = "-") -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour, for a number of seconds (rounded).

    Parameters
    ----------
    seconds : float or None
        Seconds; None, NaN, infinite or negative is unknown.
    unknown : str
        What an unknown duration is written as.

    Examples
    --------
    >>> format_duration(65.4), format_duration(3725), format_duration(None)
    ('1:05', '1:02:05', '-')
    """
    if seconds is None:
        return unknown
    value = float(seconds)
    if not math.isfinite(value) or value < 0:
        return unknown
    s = int(round(value))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
