"""The method table: the one description of what a front end may call.

The :class:`~deejai.engine.service.Engine` marks each public method with :func:`exposed`,
giving its wire name (``"playlist.join"``). :func:`method_table` reads the marks, signatures
and type hints into :class:`Method` objects, and everything else is derived from them:

* the daemon's dispatcher (:mod:`deejai.engine.rpc.dispatch`) looks methods up by wire name and
  checks the parameters with :meth:`Method.bind` (msgspec converts each value to its
  annotated type, so ``"eight"`` for ``n: int`` is refused, with the parameter named; an
  ``Annotated[int, msgspec.Meta(ge=0)]`` hint also checks the range), and runs the methods
  marked ``heavy`` (playlists, searches) in their own lane, so they never hold up the cheap
  ones;
* the client (:class:`deejai.engine.rpc.Client`) finds methods by Python name
  (:func:`by_attribute`), so ``client.join(...)`` takes the Engine's own parameters;
* the method list of ``docs/protocol.md`` is :func:`markdown_table` (a test compares them).

This is the role Mopidy's JSON-RPC inspector plays: the API is described from the objects
themselves, never copied by hand.
"""
from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import msgspec

__all__ = [
    "Method",
    "Param",
    "InvalidParams",
    "REQUIRED",
    "exposed",
    "method_table",
    "method_from_function",
    "by_attribute",
    "markdown_table",
    "DOC_BEGIN",
    "DOC_END",
]

#: The default of a parameter that has none.
REQUIRED = inspect.Parameter.empty

_MARK = "__deejai_method__"


class InvalidParams(Exception):
    """Parameters that do not fit a method: ``str()`` says why, ``param`` names the culprit."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Param:
    """One parameter: its name, annotated type (``Any`` when unannotated), default, note."""

    name: str
    type: Any = Any
    default: Any = REQUIRED
    note: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Method:
    """One callable of the contract.

    Attributes
    ----------
    name : str
        Wire name, e.g. ``"playlist.join"``.
    attr : str
        Python name on the object that implements it, e.g. ``"join"``.
    params : tuple of Param
        In signature order (``self`` and a leading context parameter left out).
    result : str
        What the call returns, in words (for the protocol document).
    summary : str
        First line of the docstring.
    func : callable
        The function (unbound for a method).
    """

    name: str
    attr: str
    params: tuple[Param, ...]
    result: str = ""
    summary: str = ""
    func: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    #: True when the function takes ``**options``: names it does not list pass unchecked.
    extra: bool = False
    #: True for calls that may take long (a playlist, a search over the library, a plugin):
    #: the daemon runs them in its heavy lane, shared fairly between connections.
    heavy: bool = False

    def bind(self, params: Mapping[str, Any] | list | None) -> dict[str, Any]:
        """Check JSON-RPC ``params`` against the signature; returns keyword arguments.

        Named params (an object) or positional ones (an array, in signature order) are
        accepted; ``None`` is no params. Each value is converted to its annotated type by
        msgspec in strict mode: integers are numbers, but booleans are not integers and strings
        are not numbers; the constraints of an ``Annotated[..., msgspec.Meta(...)]`` hint
        (``ge``, ``le``, ``max_length``) are checked too.

        Raises
        ------
        InvalidParams
            Too many positional values, an unknown or missing name, or a value of the wrong
            type (``param`` then names it).
        """
        if params is None:
            params = {}
        if isinstance(params, list):
            if len(params) > len(self.params):
                raise InvalidParams(f"invalid params for {self.name}: takes at most "
                                    f"{len(self.params)} positional values, got {len(params)}")
            given = {p.name: v for p, v in zip(self.params, params)}
        known = {p.name for p in self.params}
        if isinstance(params, dict):
            for key in params:
                if key not in known and not self.extra:
                    raise InvalidParams(f"invalid params for {self.name}: unexpected "
                                        f"parameter {key!r}", key)
            given = dict(params)
        out: dict[str, Any] = {k: v for k, v in given.items() if k not in known} \
            if isinstance(params, dict) else {}
        for p in self.params:
            if p.name not in given:
                if p.required:
                    raise InvalidParams(f"invalid params for {self.name}: missing required "
                                        f"parameter {p.name!r}", p.name)
                continue
            value = given[p.name]
            if p.type is Any:
                out[p.name] = value
                continue
            try:
                out[p.name] = msgspec.convert(value, p.type)
            except msgspec.ValidationError as exc:
                reason = str(exc).replace("`$", f"`{p.name}")
                raise InvalidParams(f"invalid params for {self.name}: {p.name}: "
                                    f"{reason[:1].lower()}{reason[1:]}", p.name) from None
        return out

    def signature_text(self) -> str:
        """``"waypoints, n=8, noise=0.0"``: the parameters as the protocol document shows
        them (JSON spellings of the defaults)."""
        parts = []
        for p in self.params:
            text = f"`{p.name}`" if p.required else f"`{p.name}={_json_text(p.default)}`"
            parts.append(f"{text} ({p.note})" if p.note else text)
        return ", ".join(parts) or "–"


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value)


def exposed(name: str, *, result: str = "", notes: Mapping[str, str] | None = None,
            heavy: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a method as part of the contract under the wire name ``name``.

    Parameters
    ----------
    name : str
        ``"<area>.<verb>"``, e.g. ``"library.scan"``.
    result : str
        The result, in words, for the protocol document.
    notes : dict, optional
        Parameter name -> a short note for the protocol document.
    heavy : bool
        The call may take long (see :attr:`Method.heavy`).
    """

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        setattr(func, _MARK, (name, result, dict(notes or {}), heavy))
        return func

    return mark


def method_from_function(name: str, func: Callable[..., Any], *, skip: int = 0,
                         result: str = "", notes: Mapping[str, str] | None = None,
                         attr: str | None = None, heavy: bool = False) -> Method:
    """A :class:`Method` from a function's signature and type hints.

    Parameters
    ----------
    name : str
        Wire name.
    func : callable
    skip : int
        Leading parameters that are not the caller's (``self``, the engine of a plugin's
        ``callable(engine, **params)``, a connection).
    result, notes
        As for :func:`exposed`.
    attr : str, optional
        Python name (default ``func.__name__``).
    heavy : bool
        The call may take long (see :attr:`Method.heavy`).

    A ``**options`` parameter makes the method accept names it does not list (unchecked);
    ``*args`` is left out (positional params beyond the named ones are refused).
    """
    sig = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # unresolvable forward references: check names only
        hints = {}
    notes = dict(notes or {})
    params = []
    extra = False
    for p in list(sig.parameters.values())[skip:]:
        if p.kind is p.VAR_KEYWORD:
            extra = True
            continue
        if p.kind is p.VAR_POSITIONAL:
            continue
        params.append(Param(p.name, hints.get(p.name, Any), p.default, notes.get(p.name, "")))
    doc = inspect.getdoc(func) or ""
    return Method(name=name, attr=attr or func.__name__, params=tuple(params), result=result,
                  summary=doc.split("\n", 1)[0], func=func, extra=extra, heavy=heavy)


def method_table(cls: type, *, skip: int = 1) -> dict[str, Method]:
    """Wire name -> :class:`Method` for every :func:`exposed` method of ``cls``, in the order
    they are defined."""
    table: dict[str, Method] = {}
    for attr, func in vars(cls).items():
        mark = getattr(func, _MARK, None)
        if mark is None:
            continue
        name, result, notes, heavy = mark
        if name in table:
            raise TypeError(f"{cls.__name__}: two methods are exposed as {name!r}")
        table[name] = method_from_function(name, func, skip=skip, result=result, notes=notes,
                                           attr=attr, heavy=heavy)
    return table


def by_attribute(*tables: Mapping[str, Method]) -> dict[str, Method]:
    """Python name -> :class:`Method` over one or more tables."""
    return {m.attr: m for table in tables for m in table.values()}


#: Where the protocol document's generated method list starts and ends.
DOC_BEGIN = "<!-- methods: generated from the method table; do not edit by hand -->"
DOC_END = "<!-- end of methods -->"


def markdown_table(methods: Iterable[Method]) -> str:
    """The ``| method | params | result |`` table of ``docs/protocol.md``, areas in the order
    ``engine``, ``library``, ``playlist`` (others after), methods in table order within one."""
    order = {"engine": 0, "library": 1, "playlist": 2}
    methods = sorted(methods, key=lambda m: order.get(m.name.split(".")[0], 3))
    rows = ["| method | params | result |", "|---|---|---|"]
    for m in methods:
        rows.append(f"| `{m.name}` | {m.signature_text()} | {m.result} |")
    return "\n".join(rows) + "\n"


def _write_doc(path: str) -> None:
    """Replace the generated method list of the protocol document at ``path``."""
    from pathlib import Path

    from deejai.engine.rpc.dispatch import contract

    doc = Path(path)
    text = doc.read_text(encoding="utf-8")
    start, end = text.index(DOC_BEGIN) + len(DOC_BEGIN), text.index(DOC_END)
    doc.write_text(text[:start] + "\n" + markdown_table(contract()) + text[end:],
                   encoding="utf-8")


if __name__ == "__main__":  # python -m deejai.engine.methods [docs/protocol.md]
    import sys

    _write_doc(sys.argv[1] if len(sys.argv) > 1 else "docs/protocol.md")
