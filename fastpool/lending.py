"""Connections lent out bare, as the psycopg_pool and aiomysql drop-ins must: their users
hold the driver's own connection object, with no fastpool object around it whose
finalizer could give it back.

The pool must then not keep that object alive itself. While lent, the record lets go of
it (for a thread pool, whose record's raw *is* the driver connection) or the bridge's
wrapper does (for fastpool.aio, whose record holds a wrapper around it); a weak
reference watches it. A holder that gives it back gets the record's reference restored.
A holder that drops it lets it die: the driver's own finalizer closes its socket, and
the weak reference's callback frees its slot in the pool, counted in
``leaks_reclaimed`` and warned (``ConnectionLeakWarning``, naming the line that took
it) -- so the pool never starves on connections nobody can give back, which is where
psycopg_pool and aiomysql themselves lose a slot for good.

Reclaimed at once when reference counting frees the connection, else at the collection
that finds it in a cycle. The connection itself is not saved (it is gone when the
callback runs); only its slot is.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any, Callable

from ._core import ConnRecord, CorePool
from .errors import ConnectionLeakWarning


class Lender:
    """The connections one pool has lent out: record -> weak reference to the lent object.

    ``what`` names the connection in the warning ("a psycopg connection"), ``give_back``
    the call its holder did not make ("putconn()")."""

    __slots__ = ("_core_ref", "_lent", "_what", "_give_back", "_on_lost", "__weakref__")

    def __init__(self, core: CorePool, what: str, give_back: str,
                 on_lost: Callable[[], Any] | None = None) -> None:
        self._core_ref = weakref.ref(core)
        self._lent: dict[ConnRecord, weakref.ref[Any]] = {}
        self._what = what
        self._give_back = give_back
        self._on_lost = on_lost  # called once a lost connection's slot is free again

    def lend(self, rec: ConnRecord, site: Any) -> Any:
        """The driver connection of rec, for a holder whose frame ``site`` took it (None:
        not known); the pool holds it weakly until take_back()."""
        core = self._core_ref()
        assert core is not None
        raw = rec.raw
        ref = rec.lend_ref
        if ref is None:
            # One weak reference per record, made at its first lending and kept on it:
            # the connection it watches is the record's for life, and a callback that
            # fires while it is not lent does nothing (see _dropped).
            conn = getattr(raw, "driver_connection", raw)
            wrapper = raw if conn is not raw else None
            ref = rec.lend_ref = weakref.ref(
                conn, _dropped_callback(weakref.ref(self), rec, wrapper))
        else:
            conn = ref()
        detach = conn is raw
        if site is None:
            core._lend(rec, None, -1, detach)
        else:
            core._lend(rec, site.f_code, site.f_lasti, detach)
        if not detach:
            raw.driver_connection = None
        self._lent[rec] = ref
        return conn

    def take_back(self, rec: ConnRecord) -> Any:
        """The lent connection, back from its holder: the pool holds it again. None if it
        was not lent (or already taken back)."""
        ref = self._lent.pop(rec, None)
        if ref is None:
            return None
        conn = ref()
        core = self._core_ref()
        if core is not None:
            if rec.raw is None:
                core._unlend(rec, conn)
            else:
                rec.raw.driver_connection = conn
        return conn

    def _dropped(self, rec: ConnRecord, wrapper: Any) -> None:
        if self._lent.pop(rec, None) is None:
            return  # taken back meanwhile
        core = self._core_ref()
        if core is None:
            return
        if wrapper is not None:
            wrapper.closed = True  # its driver connection is gone: nothing to close
        code, lasti = core._lost(rec)
        try:
            if self._on_lost is not None:
                self._on_lost()
        finally:
            _warn(self._what, self._give_back, code, lasti)

    def __len__(self) -> int:
        return len(self._lent)


def _dropped_callback(lender_ref: weakref.ref[Lender], rec: ConnRecord, wrapper: Any) -> Any:
    # A closure over the record, not over the lent object (which must be free to die);
    # the lender weakly (a dropped pool owes nothing).
    def dropped(_ref: Any) -> None:
        lender = lender_ref()
        if lender is not None:
            lender._dropped(rec, wrapper)

    return dropped


def _warn(what: str, give_back: str, code: Any, lasti: int) -> None:
    line = _line_of(code, lasti)
    where = "an unknown place" if code is None or line is None else f"{code.co_filename}:{line}"
    msg = (f"fastpool: {what} taken at {where} was dropped without {give_back}; it was"
           f" closed and its slot in the pool reclaimed")
    if code is not None and line is not None:
        warnings.warn_explicit(msg, ConnectionLeakWarning, code.co_filename, line)
    else:
        warnings.warn(msg, ConnectionLeakWarning, stacklevel=2)


def _line_of(code: Any, lasti: int) -> int | None:
    if code is None or lasti < 0:
        return None
    for start, end, line in code.co_lines():
        if start <= lasti < end:
            return line  # type: ignore[no-any-return]
    return None
