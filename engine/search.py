"""The one search rule: how a few typed words find tracks.

``deejai tracks``, the Kivy app's search box (both through ``Library.tracks``) and track
resolution (:func:`deejai.engine.resolve.resolve_track`) all match the same way:

* text is folded: decomposed (Unicode NFKD), combining marks dropped, case-folded, so
  ``"bjork"`` finds "Björk" and ``"STRASSE"`` finds "Straße";
* words are runs of letters and digits (``\\w+`` without ``_``), so punctuation and the
  separators people type (``-``, ``–``, ``%``) do not matter;
* a track matches when every word of the query starts a word of its "artist title album
  file-name" text; when no track matches so, every word may occur anywhere in it.

:class:`SearchIndex` folds a list of records once (one normalisation and one byte-table
translation over the whole text), so a query over 100,000 tracks is a few substring scans
(``benchmarks/search.py`` measures it).

A query is at most :data:`MAX_QUERY_CHARS` characters and :data:`MAX_QUERY_WORDS` words
(:func:`check_query`): nobody types more, and longer ones are only a way to make the daemon
work.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Any, Mapping, Sequence

from deejai.engine.errors import InvalidParamsError

__all__ = ["normalise_text", "words", "record_stem", "SearchIndex", "check_query",
           "MAX_QUERY_CHARS", "MAX_QUERY_WORDS"]

#: Longest query, in characters.
MAX_QUERY_CHARS = 100_000
#: Most words in a query.
MAX_QUERY_WORDS = 1000

_WORD = re.compile(r"[^\W_]+")
_NON_WORD_LINE = re.compile(r"[^\w\n]+|_+")
#: bytes.translate table: ASCII letters, digits and newlines stay, everything else is a space
_ASCII_TABLE = bytes(c if (chr(c).isalnum() or c == 10) else 32 for c in range(256))


_no_marks: dict[int, None] | None = None


def _marks_table() -> dict[int, None]:
    """``str.translate`` table that deletes every combining mark (built once, ~0.1 s)."""
    global _no_marks
    if _no_marks is None:
        _no_marks = {c: None for c in range(0x110000) if unicodedata.combining(chr(c))}
    return _no_marks


def normalise_text(text: str) -> str:
    """Fold ``text`` for matching: NFKD, no combining marks, case-folded.

    Examples
    --------
    >>> normalise_text("Björk – JÓGA")
    'bjork – joga'
    """
    text = str(text)
    if text.isascii():  # NFKD leaves ASCII alone
        return text.casefold()
    decomposed = unicodedata.normalize("NFKD", text)
    if len(decomposed) < 64:  # a query, a tag: not worth the table
        return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    return decomposed.translate(_marks_table()).casefold()


def words(text: str) -> list[str]:
    """The folded words of ``text``: runs of letters and digits (``_`` separates words)."""
    return _WORD.findall(normalise_text(text))


def check_query(text: str, param: str | None = "query") -> None:
    """Refuse a query longer than :data:`MAX_QUERY_CHARS` or :data:`MAX_QUERY_WORDS`.

    Raises
    ------
    InvalidParamsError
        Naming ``param`` (JSON-RPC -32602 over the daemon).
    """
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidParamsError(f"{param or 'query'}: a query may be at most {MAX_QUERY_CHARS} "
                                 f"characters long, this one has {len(text)}", param)
    _check_words(len(_WORD.findall(text)), param)


def _check_words(n: int, param: str | None) -> None:
    if n > MAX_QUERY_WORDS:
        raise InvalidParamsError(f"{param or 'query'}: a query may have at most "
                                 f"{MAX_QUERY_WORDS} words, this one has {n}", param)


def record_stem(record: Mapping[str, Any]) -> str:
    """The file name of a record's path without its extension (``/`` or ``\\`` separated)."""
    path = str(record.get("path") or "")
    base = path[max(path.rfind("/"), path.rfind("\\")) + 1:]
    dot = base.rfind(".")
    return base[:dot] if dot > 0 else base


def _haystacks(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """For each record, " artist title album file-name " folded, words separated by one space.

    All records are folded in one pass over one string (one normalisation, one regex), which
    keeps a query over a 100,000-track library fast.
    """
    if not records:
        return []
    lines = [
        f"{r.get('artist') or ''} {r.get('title') or ''} {r.get('album') or ''} "
        f"{record_stem(r)}".replace("\n", " ")
        for r in records
    ]
    out = [""] * len(lines)
    # most tags are ASCII: those lines take the fast path (a byte-table translation), the
    # others are folded together in one normalisation and one regex
    ascii_rows = [i for i, line in enumerate(lines) if line.isascii()]
    other_rows = [i for i, line in enumerate(lines) if not line.isascii()] if len(
        ascii_rows) < len(lines) else []
    for rows, fast in ((ascii_rows, True), (other_rows, False)):
        if not rows:
            continue
        folded = normalise_text("\n".join(lines[i] for i in rows))
        if fast:
            folded = folded.encode("ascii").translate(_ASCII_TABLE).decode("ascii")
        else:
            folded = _NON_WORD_LINE.sub(" ", folded)
        for i, line in zip(rows, folded.split("\n")):
            out[i] = " " + " ".join(line.split()) + " "
    return out


class SearchIndex:
    """Records prepared for matching (folded once).

    Parameters
    ----------
    records : sequence of dict
        Each with ``id``, ``path``, ``artist``, ``title``, ``album``; the order is kept in
        the results.
    """

    def __init__(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.records = list(records)
        self._hays: list[str] | None = None

    def haystacks(self) -> list[str]:
        """The folded " artist title album file-name " of each record (computed once)."""
        if self._hays is None:
            self._hays = _haystacks(self.records)
        return self._hays

    def _filter(self, needles: list[str], rows: Sequence[int] | None = None) -> list[int]:
        hays = self.haystacks()
        needles = sorted(needles, key=len, reverse=True)  # the longest one is the most selective
        first, rest = needles[0], needles[1:]
        rows = [i for i, h in enumerate(hays) if first in h] if rows is None else [
            i for i in rows if first in hays[i]]
        for needle in rest:
            rows = [i for i in rows if needle in hays[i]]
        return rows

    def match(self, query: str | Sequence[str]) -> list[Mapping[str, Any]]:
        """The records ``query`` finds, in the order given (see the module docstring).

        Parameters
        ----------
        query : str or list of str
            What was typed, or its :func:`words`. A query without words finds nothing.

        Raises
        ------
        InvalidParamsError
            The query is too long (:func:`check_query`).
        """
        if isinstance(query, str):
            check_query(query)
            terms = words(query)
        else:
            terms = list(query)
            _check_words(len(terms), "query")
        if not terms:
            return []
        rows = self._filter([" " + t for t in terms])  # each word starts a word ...
        if not rows:  # ... or, when nothing matches so, occurs anywhere
            rows = self._filter(terms)
        return [self.records[i] for i in rows]
