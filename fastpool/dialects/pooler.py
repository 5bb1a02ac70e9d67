"""Behind a transaction-mode pooler (PgBouncer ``pool_mode = transaction``): each transaction
(each statement, in autocommit) may run on a different server session, so nothing may be
left on a session for later. ``behind_pooler=True`` makes fastpool

* never prepare statements server-side (``prepare_threshold=None``: PgBouncer 1.18 cannot
  follow protocol-level prepared statements across sessions);
* refuse, before sending, the statements that keep state on the session, with
  ``fastpool.SessionStateError``: ``SET`` / ``RESET`` outside a transaction's ``LOCAL``
  scope, ``LISTEN``, ``PREPARE``, temporary tables, ``DECLARE ... WITH HOLD``, and the
  session-level advisory locks (``pg_advisory_lock``; the ``_xact_`` ones are fine).

The check reads the statement's first words (after comments) and looks for the advisory
lock functions anywhere in it; it costs a regular-expression match per statement, and only
with ``behind_pooler``.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import SessionStateError

__all__ = ["SessionStateError", "session_state_reason", "refuse_session_state", "cursor_class"]

_LEADING = re.compile(r"(?:\s+|--[^\n]*\n?|/\*.*?\*/)*", re.DOTALL)
_PINNING = [
    (re.compile(r"SET\s+(?!LOCAL\b|TRANSACTION\b|CONSTRAINTS\b)", re.IGNORECASE),
     "SET outside a transaction's LOCAL scope stays on the server session"),
    (re.compile(r"RESET\b", re.IGNORECASE), "RESET changes the server session"),
    (re.compile(r"(?:UN)?LISTEN\b", re.IGNORECASE), "LISTEN needs one session for its notifications"),
    (re.compile(r"PREPARE\b(?!\s+TRANSACTION\b)", re.IGNORECASE),
     "PREPARE leaves a prepared statement on the server session"),
    (re.compile(r"CREATE\s+(?:(?:GLOBAL|LOCAL)\s+)?(?:TEMP|TEMPORARY)\b", re.IGNORECASE),
     "a temporary table lives on the server session"),
    (re.compile(r"DECLARE\b[^;]*\bWITH\s+HOLD\b", re.IGNORECASE | re.DOTALL),
     "a WITH HOLD cursor outlives its transaction on the server session"),
]
_SESSION_LOCK = re.compile(r"\bpg_(?:try_)?advisory_lock(?:_shared)?\s*\(", re.IGNORECASE)


def session_state_reason(sql: Any) -> str | None:
    """Why sql would keep state on a pooled server session, or None."""
    if isinstance(sql, (bytes, bytearray)):
        sql = bytes(sql).decode("utf-8", "replace")
    elif not isinstance(sql, str):
        sql = str(sql)  # psycopg.sql.Composed and the like: its text is enough here
    start = _LEADING.match(sql)
    pos = start.end() if start else 0
    for pattern, reason in _PINNING:
        if pattern.match(sql, pos):
            return reason
    if _SESSION_LOCK.search(sql):
        return "pg_advisory_lock holds the lock on the server session (use pg_advisory_xact_lock)"
    return None


def refuse_session_state(sql: Any) -> None:
    """Raise SessionStateError if sql would keep state on a pooled server session."""
    reason = session_state_reason(sql)
    if reason is not None:
        raise _refuse(sql, reason)


def _refuse(sql: Any, reason: str) -> SessionStateError:
    first = str(sql).strip().split(None, 3)[:3]
    return SessionStateError(
        f"refused behind a transaction-mode pooler (behind_pooler=True): {reason}:"
        f" {' '.join(first)!r}...; run it inside a transaction with its LOCAL / _xact_ form,"
        f" or connect to the server directly")


def cursor_class(psycopg: Any, *, is_async: bool) -> type:
    """psycopg's cursor class with the check in front of execute()."""
    base = psycopg.AsyncCursor if is_async else psycopg.Cursor

    class PoolerCursor(base):  # type: ignore[misc, valid-type]
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            refuse_session_state(query)
            return super().execute(query, params, **kwargs)

        def stream(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            refuse_session_state(query)
            return super().stream(query, params, **kwargs)

    PoolerCursor.__name__ = PoolerCursor.__qualname__ = (
        "PoolerAsyncCursor" if is_async else "PoolerCursor")
    return PoolerCursor
