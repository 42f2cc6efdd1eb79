"""SPEC §20: a row locked by another session (an operator's open transaction holding ``SELECT … FOR UPDATE``, a long
migration) delays only the work on that row. The one shape the services use for it:

* the transaction waits for a lock at most ROW_LOCK_WAIT_MS (``wait_briefly_for_row_locks``), whatever the session's
  REVENUE_ASI_LOCK_TIMEOUT_MS;
* the work runs in a savepoint — the whole batch at once (``batch_then_one_by_one``) or item by item
  (``one_by_one``); when a lock held elsewhere stops the batch, each item runs again alone in its own savepoint;
* an item that still fails with one of `catch` (by default only ROW_BUSY_ERRORS) is rolled back to its savepoint and
  handed back with its error, so every other item commits at once. The caller leaves a busy item for its next run
  (puts it back in its inbox, or lets the next run find it again as a candidate).

Once MAX_BUSY items alone have met a lock, the rest are handed back untried: that many is a lock on a whole table
(a long migration), on which every item would wait in turn. Connection errors always propagate: the transaction is
gone, nothing can be set aside."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

from listener.store.database import CONNECTION_ERRORS, ROW_BUSY_ERRORS, wait_briefly_for_row_locks

T = TypeVar("T")
Errors = tuple[type[Exception], ...]
MAX_BUSY = 10  # items that may wait (ROW_LOCK_WAIT_MS each) in one call before the rest are handed back untried


def is_busy(exc: BaseException) -> bool:
    """The error says a row (or table) is locked by another session: retry the item later, nothing is wrong."""
    return isinstance(exc, ROW_BUSY_ERRORS)


async def one_by_one(conn: asyncpg.Connection, items: Sequence[T], act: Callable[[T], Awaitable[object]], *,
                     catch: Errors = ROW_BUSY_ERRORS) -> list[tuple[T, Exception]]:
    """`act(item)` for each item in its own savepoint, in the caller's transaction (whose lock wait this shortens
    for the rest of it). Returns the items that raised one of `catch`, with the error, in order."""
    await wait_briefly_for_row_locks(conn)
    return await _each(conn, items, act, catch)


async def batch_then_one_by_one(conn: asyncpg.Connection, items: Sequence[T],
                                act: Callable[[Sequence[T]], Awaitable[object]], *,
                                catch: Errors = ROW_BUSY_ERRORS) -> list[tuple[T, Exception]]:
    """`act(items)` in one savepoint; when it raises one of `catch`, `act([item])` for each item alone (as
    `one_by_one`). Returns the items that still raised, with the error. `act` must keep what it did (counts, results)
    only once it returns: a batch rolled back is run again item by item."""
    await wait_briefly_for_row_locks(conn)
    if not items:
        return []
    try:
        async with conn.transaction():
            await act(items)
        return []
    except CONNECTION_ERRORS:
        raise
    except catch as exc:
        if len(items) == 1:
            return [(items[0], exc)]
    return await _each(conn, items, lambda item: act([item]), catch)


async def _each(conn: asyncpg.Connection, items: Sequence[T], act: Callable[[T], Awaitable[object]],
                catch: Errors) -> list[tuple[T, Exception]]:
    failed: list[tuple[T, Exception]] = []
    busy = 0
    for i, item in enumerate(items):
        try:
            async with conn.transaction():
                await act(item)
        except CONNECTION_ERRORS:
            raise
        except catch as exc:
            failed.append((item, exc))
            busy += is_busy(exc)
            if busy >= MAX_BUSY:
                failed += [(rest, exc) for rest in items[i + 1:]]
                break
    return failed
