"""Defensive JSON (SPEC §11 "one bad row never stalls the rest"): every JSON value the daemon reads is decoded
with bounds — size, nesting depth, number size — and a value outside them becomes that value's *reason*, never an
exception that escapes a loop.

Why not plain ``json.loads``: nesting a few thousand deep raises ``RecursionError``, and an integer of more than
4,300 digits raises ``ValueError`` (Python's int-str limit) — inside asyncpg's jsonb decoder that fails the whole
``fetch``, so one row stalled every row fetched with it. :func:`decode_jsonb` never raises: a value it refuses comes
back as an :class:`InvalidJson` marker (falsy, not a dict or list), which ``parse_payload`` turns into
``invalid_payload`` and every ``isinstance(x, dict)`` check already treats as "not an object".

Database wiring (``listener/store/database.py`` ``_init_connection``): use ``decoder=decode_jsonb`` for ``jsonb`` and
``json`` instead of ``json.loads``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_JSON_CHARS = 1_048_576  # 1 MiB of text: far above any payload, far below what hurts a daemon
MAX_DEPTH = 64  # payload v2 nests 5 deep
MAX_INT_DIGITS = 100  # ids and counters fit; 10**100 and beyond are not data we act on
MAX_STRING_CHARS = MAX_JSON_CHARS

# A JSON string (with escapes) or a bracket: strings are skipped whole, so brackets inside them do not count.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class UnsafeJson(ValueError):
    """A JSON text outside the bounds; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidJson:
    """What :func:`decode_jsonb` returns for a value it refuses: falsy, not a container, carries the reason.

    It is deliberately not a ``str``/``dict``/``list``: code that expects an object sees "not an object", and code
    that would use it as data fails on that one item (its reason is ``.reason``)."""

    __slots__ = ("reason", "length")

    def __init__(self, reason: str, length: int) -> None:
        self.reason = reason
        self.length = length

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"InvalidJson({self.reason!r}, length={self.length})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InvalidJson) and other.reason == self.reason and other.length == self.length

    def __hash__(self) -> int:
        return hash((self.reason, self.length))


def nesting_depth(text: str) -> int:
    """The deepest ``[``/``{`` nesting of a JSON text (brackets inside strings ignored); when the text has at most
    MAX_DEPTH brackets in all, their count (an upper bound, and all a caller needs)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:  # cheap bound, the common case: C-speed counts only
        return text.count("[") + text.count("{")
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest
        elif token in ("]", "}"):
            depth -= 1
    return deepest


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise UnsafeJson(f"a number has {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnsafeJson(f"a number is out of range ({text[:20]}{'…' if len(text) > 20 else ''})")
    return value


def _refuse_constant(name: str) -> Any:
    raise UnsafeJson(f"{name} is not JSON")


def exact_number(text: str) -> Any:
    """``parse_int`` / ``parse_float`` for exact decoding (the fallback decision, which must agree with PostgreSQL's
    numeric): a Decimal, or an int when it is one of at most MAX_INT_DIGITS digits. Never hits the int-str limit;
    the caller bounds the value before using it."""
    from decimal import Decimal

    if len(text) <= MAX_INT_DIGITS and "." not in text and "e" not in text and "E" not in text:
        return int(text)
    return Decimal(text)


def loads(text: str | bytes, *, parse_float: Any = None, parse_int: Any = None) -> Any:
    """``json.loads`` within the bounds; raises :class:`UnsafeJson` (a ValueError) naming what is wrong.

    By default an integer of more than MAX_INT_DIGITS digits and a float that is not finite are refused; pass
    ``parse_int=parse_float=exact_number`` to read every number exactly instead (bounded by the caller)."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafeJson("not UTF-8") from None
    if len(text) > MAX_JSON_CHARS:
        raise UnsafeJson(f"{len(text)} characters of JSON (at most {MAX_JSON_CHARS})")
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise UnsafeJson(f"nested more than {MAX_DEPTH} deep")
    try:
        return json.loads(text, parse_int=parse_int or _parse_int, parse_float=parse_float or _parse_float,
                          parse_constant=_refuse_constant)
    except UnsafeJson:
        raise
    except RecursionError:  # cannot happen under MAX_DEPTH; kept so no input can escape as RecursionError
        raise UnsafeJson(f"nested more than {MAX_DEPTH} deep") from None
    except ValueError as exc:
        raise UnsafeJson(f"not JSON: {str(exc)[:120]}") from None


def decode_jsonb(text: str) -> Any:
    """The asyncpg decoder for ``jsonb``/``json``: the value, or :class:`InvalidJson` with the reason. Never raises."""
    try:
        return loads(text)
    except UnsafeJson as exc:
        return InvalidJson(exc.reason, len(text))
    except Exception as exc:  # pragma: no cover - a decoder that raises fails every row of its fetch
        return InvalidJson(f"{type(exc).__name__}", len(text))


_INT_LIMIT = 10**MAX_INT_DIGITS


def bounds_problem(value: Any) -> str | None:
    """For a value decoded elsewhere (e.g. by plain ``json.loads``): why it is beyond the bounds, or None. Walks
    iteratively, so no depth can raise RecursionError here; strings and other leaves are never pushed (it runs on
    every payload the dispatcher parses)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        kind = type(item)
        if kind is dict:
            children: Any = item.values()
        elif kind is list:
            children = item
        else:
            problem = _leaf_problem(item)
            if problem is not None:
                return problem
            continue
        if depth > MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} deep"
        for child in children:
            child_kind = type(child)
            if child_kind is str or child_kind is bool or child is None:
                continue
            if child_kind is dict or child_kind is list:
                push((child, depth + 1))
            else:
                problem = _leaf_problem(child)
                if problem is not None:
                    return problem
    return None


def _leaf_problem(item: Any) -> str | None:
    if isinstance(item, InvalidJson):
        return item.reason
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return None if -_INT_LIMIT < item < _INT_LIMIT else f"a number has more than {MAX_INT_DIGITS} digits"
    if isinstance(item, float) and not math.isfinite(item):
        return "a number is out of range"
    return None


def reason_if_invalid(value: Any) -> str | None:
    """The reason a decoded value was refused, or None for a usable one."""
    return value.reason if isinstance(value, InvalidJson) else None
