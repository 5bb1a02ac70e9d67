"""Cooperative waits under gevent and eventlet.

The core makes a caller that must wait for a connection sleep on a C lock with the GIL
released. That is right for threads, and wrong under gevent or eventlet: there every
greenlet runs on one OS thread, and a C-level sleep stops the hub, so the holder that
would give the connection back never runs (the pool hangs until its timeout).

So the core asks :func:`new_parker` for each waiter. When ``threading`` is monkey-patched
it returns a lock from the patched ``_thread`` module, whose ``acquire`` yields to the hub;
otherwise None, and the waiter sleeps in C as before. The check costs two dictionary
look-ups per wait (never on a checkout that does not wait), and this module imports
neither gevent nor eventlet: it only looks at what the process has already imported, so
a process that does not use them is unchanged.

Everything else in fastpool waits on ``threading`` primitives (the opener's back-off, the
deadline watcher, joins at close), which monkey-patching already makes cooperative, and
its background workers are ``threading.Thread``\\ s, which become greenlets.
"""

from __future__ import annotations

import _thread
import sys
from typing import Any


def patched() -> str | None:
    """"gevent" or "eventlet" when that library has monkey-patched threads, else None."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return "gevent"
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("thread"):
        return "eventlet"
    return None


def new_parker() -> Any:
    """A cooperative lock, already held, for one waiter to sleep on (``acquire(True,
    seconds)``) until a giver ``release()``\\ s it; None when threads are not patched."""
    if patched() is None:
        return None
    lock = _thread.allocate_lock()  # looked up now: the patched one
    lock.acquire()
    return lock
