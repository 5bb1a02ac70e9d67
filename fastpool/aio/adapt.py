"""The DB-API face of an async driver's connection, as fastpool's core uses it.

Compiled with the bridge (src_c/fastpool/_bridge.pyx): ``SyncConnection`` wraps the
driver's connection, ``SyncCursor`` its cursors; every call whose result is awaitable is
awaited through the bridge (stepped in place by the task inside fastpool.aio, or run on
the pool's loop from a worker thread).
"""

from __future__ import annotations

from .._bridge import SyncConnection, SyncCursor, abort_transport

__all__ = ["SyncConnection", "SyncCursor", "abort_transport"]
