# The hot path of fastpool.aio's bridge (fastpool/aio/bridge.py explains the design): a
# task runs fastpool's blocking code in a greenlet, and each awaitable that code needs is
# stepped right there; only one that must wait switches to the task, which waits for it.
#
# Compiled because it runs on every statement: a driver's coroutine that completes without
# waiting is stepped with PyIter_Send, which reports its return without raising
# StopIteration (about 1 us per call saved over Python, measured here), and a call reuses an
# idle greenlet (making one costs about 10 us).

cimport cython
from cpython.object cimport PyObject_GenericSetAttr
from cpython.ref cimport PyObject

from fastpool._core cimport (MODE_EXEC, MODE_ROW, W_PENDING, WS_AGAIN, WS_RETRY, ConnRecord, CorePool,
                             Result, Waiter)

import threading
from asyncio import ensure_future
from heapq import heapify, heappop, heappush
from asyncio.events import _get_running_loop

from greenlet import GreenletExit, getcurrent, greenlet

from .errors import EventLoopError


cdef extern from "Python.h":
    # PYGEN_RETURN (0): returned, *presult is its value; PYGEN_NEXT (1): yielded *presult;
    # PYGEN_ERROR (-1): raised (the error is set, and propagated by Cython).
    int PyIter_Send(object iter, object arg, PyObject **presult) except -1
    object PyContext_CopyCurrent()

cdef enum:
    PYGEN_RETURN = 0
    PYGEN_NEXT = 1


cdef extern from *:
    """
    /* Take ownership of the new reference PyIter_Send stored. */
    static inline PyObject *fp_steal(PyObject *o) { return o; }
    /* Whether `await o` is possible: its type has am_await (coroutines, futures, ...). */
    static inline int fp_awaitable(PyObject *o) {
        PyAsyncMethods *am = Py_TYPE(o)->tp_as_async;
        return am != NULL && am->am_await != NULL;
    }
    """
    object fp_steal(PyObject *o)
    bint fp_awaitable(object o)


class Bridged(greenlet):
    """A greenlet running fastpool's code for awaiting tasks, one call at a time."""


@cython.final
@cython.freelist(32)
cdef class Outcome:
    """What a bridged greenlet switches back with when its call is over."""
    cdef object value
    cdef object error


def _serve():
    # The body of every bridged greenlet: run a call in the task's context, hand its
    # outcome to the task's side (the parent, the loop's greenlet), and wait there for the
    # next call. (The context is entered with ctx.run, not set as gr_context: greenlet
    # refuses that on a suspended greenlet with no Python frame, as this compiled one is.)
    # It takes no arguments and gets even its first call by a switch: greenlet keeps the
    # arguments a greenlet was started with for as long as it runs, and this one runs
    # for good (idle between calls): its first call's function and arguments -- a pool's
    # bound method, a Conn -- would never be freed.
    cdef Outcome outcome
    parent = getcurrent().parent
    fn, args, ctx = parent.switch()
    while True:
        outcome = Outcome.__new__(Outcome)
        try:
            outcome.value = ctx.run(fn, *args)
        except GreenletExit:
            raise  # collected mid-call (its task is gone): end
        except BaseException as exc:  # the task gets it, whatever it is
            outcome.error = exc
        fn = args = ctx = None  # hold nothing while idle
        fn, args, ctx = parent.switch(outcome)


class _Idle(threading.local):
    def __init__(self):
        self.greenlets = []


_idle = _Idle()
# Idle bridged greenlets kept per thread; more are made when calls overlap.
MAX_IDLE = 256


def in_bridge():
    """True inside fastpool's code run by call() (its awaits go to the task)."""
    return type(getcurrent()) is Bridged


@cython.final
@cython.freelist(32)
cdef class _Suspend:
    """`await _Suspend(signal)` hands the task what the awaitable inside fn yielded,
    exactly as if the task's own coroutine had yielded it: a future (the task resumes us
    when it is done; its result or error is the awaitable's to read) or None (run again on
    the loop's next round). An exception the task throws in (cancellation) is raised at the
    await. (A compiled awaitable: types.coroutine would wrap a compiled generator in a
    Python-level wrapper, several isinstance checks per step.)"""
    cdef object signal
    cdef bint sent

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        if self.sent:
            raise StopIteration
        self.sent = True
        return self.signal


cdef inline _Suspend _suspend(object signal):
    cdef _Suspend s = _Suspend.__new__(_Suspend)
    s.signal = signal
    return s


async def call(fn, *args):
    """Run fn(*args) for the calling task; an await inside it that must wait suspends the
    task here, so fn's blocking points become the task's awaits."""
    cdef list idle = _idle.greenlets
    cdef Outcome outcome
    if idle:
        g = idle.pop()
    else:
        g = Bridged(_serve, getcurrent())
        g.switch()  # started, waiting for its first call (see _serve)
    # The task's context variables (fastpool.deadline's among them) are seen inside, and
    # whatever fn sets stays inside.
    value = g.switch(fn, args, PyContext_CopyCurrent())
    while type(value) is not Outcome:
        # fn waits for `value` (what its awaitable yielded): the task waits for it in
        # fn's place, then lets fn go on.
        try:
            await _suspend(value)
        except BaseException as exc:  # CancelledError too: it lands where fn waited
            value = g.throw(exc)
        else:
            value = g.switch()
    if len(idle) < MAX_IDLE:
        idle.append(g)
    outcome = <Outcome>value
    if outcome.error is not None:
        error = outcome.error
        outcome.error = None
        raise error
    # Taken out, not just read: the idle greenlet still holds its Outcome (a temporary of
    # its switch) until its next call, and a value left there would outlive the task's
    # last reference to it (a dropped Conn would never be reclaimed).
    result = outcome.value
    outcome.value = None
    return result


def await_(awaitable):
    """Inside call(): the result of awaitable, stepped here; the greenlet switches to the
    task only while the awaitable must wait."""
    g = getcurrent()
    if type(g) is not Bridged:
        raise EventLoopError("fastpool.aio: an await was needed outside fastpool's async calls")
    return step(g, awaitable)


cpdef object step(object g, object awaitable):
    """Run awaitable to its end inside bridged greenlet g (see await_)."""
    cdef PyObject *res = NULL
    cdef int r
    it = awaitable.__await__()
    r = PyIter_Send(it, None, &res)
    signal = fp_steal(res)
    if r == PYGEN_RETURN:
        return signal
    parent = g.parent
    while True:
        try:
            parent.switch(signal)
        except BaseException as exc:  # thrown in by the task (cancelled)
            try:
                signal = it.throw(exc)
            except StopIteration as done:  # it handled exc and returned
                return done.value
            continue
        res = NULL
        r = PyIter_Send(it, None, &res)
        signal = fp_steal(res)
        if r == PYGEN_RETURN:
            return signal


# ---- the native route: a plain statement with no greenlet --------------------------------
STATEMENT_EXEC = MODE_EXEC   # statement()'s mode for execute()
STATEMENT_ROW = MODE_ROW     # ... and for query_row()


async def statement(CorePool pool, object sql, object params, int mode, object run):
    """execute() (MODE_EXEC) or query_row() (MODE_ROW) for the calling task: it awaits
    the driver's own coroutines here, the connection taken and settled by the core
    (_take_idle or checkout, _give_back_quiet, _statement_failed: _run's rules). What may
    do I/O in the pool's own code goes through the bridge (call): a reset hook's
    give-back, a retry, and -- the whole statement, `run(sql, params)` -- a deadline, a
    check hook or transaction control. Measured (python -m bench.instructions, SELECT 1
    on asyncmy): the bridge costs about 17,000 instructions per statement, most of it
    greenlet switches, their stack copies and the blocking face's wrappers; this route
    about 3,000."""
    cdef ConnRecord rec
    cdef SyncConnection raw
    cdef Result r
    if not pool._native_ok(sql, mode):
        return await call(run, sql, params)
    rec = pool._take_idle()
    if rec is None:
        if not pool._task_may_wait():
            return await call(run, sql, params)  # it would connect inline: I/O, bridged
        # None idle: wait in the core's queue, the sleep awaited here (checkout).
        rec = await checkout(pool, pool._native_parker(), pool.timeout_)
    raw = <SyncConnection>rec.raw
    conn = raw.driver_connection
    cur = None
    err = None
    try:
        if raw.one_call:
            # The driver answers the whole statement in one call (asyncpg's fetchrow):
            # run_statement(sql, params, mode) gives its coroutine, awaited right here, for
            # the row (MODE_ROW) or the rowcount (MODE_EXEC). No cursor to make or close.
            result = await conn.run_statement(sql, params, mode)
            if mode != MODE_ROW:
                r = Result.__new__(Result)
                r.rowcount = result
                result = r
        else:
            # As the core's _execute_on, with each driver call awaited here.
            cur = conn.cursor()
            if not hasattr(cur, "execute"):
                cur = await cur  # aiomysql: an awaitable context manager; aiosqlite: a coroutine
            if params is None:
                await cur.execute(sql)
            else:
                await cur.execute(sql, params)
            if mode == MODE_ROW:
                try:
                    result = cur.fetchone()
                    if fp_awaitable(result):  # a driver whose rows are buffered returns them
                        result = await result
                except Exception:
                    if cur.description is not None:
                        raise
                    result = None  # no result set (psycopg raises for it)
            else:
                r = Result.__new__(Result)
                r.rowcount = cur.rowcount
                r.lastrowid = getattr(cur, "lastrowid", None)
                result = r
            done = cur.close()
            cur = None
            if fp_awaitable(done):
                await done
    except BaseException as exc:
        err = exc
    if err is None:
        if not pool._give_back_quiet(rec):
            await call(pool._checkin_bridged, rec)
        return result
    # The statement failed: as _execute_on and _run, the cursor closed first (the unread
    # rest of a result read off), then the connection settled by what the error says.
    try:
        if not isinstance(err, Exception):
            raw.interrupted = True  # cut off mid-call (cancelled): discarded, ended on the server
        if cur is not None:
            done = cur.close()
            if raw.interrupted:
                # Not awaited: the protocol is somewhere mid-way, and a close queued
                # behind the statement (aiosqlite) would wait for all of it.
                if fp_awaitable(done):
                    from .aio.bridge import _discard
                    _discard(done)
            elif fp_awaitable(done):
                await done
    except Exception:
        pass  # the statement's own error is the one to report
    except BaseException as exc:  # cancelled while closing: that is what the task sees now
        raw.interrupted = True
        err = exc
    if pool._statement_failed(rec, err):
        return await call(pool._run_again, sql, params, mode)
    raise err


async def checkout(CorePool pool, TaskParker parker, double timeout):
    """A connection for the calling task, waiting in the core's queue as any caller
    does (FIFO under the fairness bound, max_waiting) at most timeout seconds (< 0:
    forever; the pool's own is pool.timeout_), with each sleep awaited on the loop: the
    core's _wait steps, no greenlet."""
    cdef Waiter w = Waiter.__new__(Waiter)
    cdef int st
    cdef double seconds
    w.parker = parker
    rec = pool._get_for_task(w, timeout)
    while rec is None:
        while True:
            seconds = pool._wait_seconds(w)  # the core's own steps, C calls
            try:
                woke = await parker.sleep(seconds)
            except BaseException:
                # Cancelled (or the loop is going): leave the queue, giving back anything
                # handed over meanwhile -- to the next waiter, never lost.
                pool._abandon_wait(w)
                raise
            st = pool._wait_step(w, 1 if woke else 0)
            if st != WS_AGAIN:
                break
        if st == WS_RETRY:
            w.requeued = True
            w.outcome = W_PENDING
            rec = pool._get_for_task(w, timeout)
        else:
            rec = pool._wait_end_for(w)
    return rec


# ---- how a task waits for a connection -------------------------------------------------
@cython.final
cdef class Expiries:
    """When the waiting tasks of one loop's pool give up: one loop timer, for the
    earliest of them, instead of one per wait. (A timer per wait is a TimerHandle, a heap
    push with Python comparisons and a cancel: about a tenth of the loop's time with 64
    tasks on 4 connections, measured with cProfile.) A task woken before its time stays
    in the heap and is skipped when its time comes; the heap is swept when mostly such."""
    cdef object loop
    cdef list heap                  # (when, seq, future), earliest first
    cdef object handle              # the loop timer for heap[0], or None
    cdef double armed_at
    cdef Py_ssize_t live
    cdef unsigned long long seq

    def __cinit__(self, loop):
        self.loop = loop
        self.heap = []

    cdef int add(self, double seconds, fut) except -1:
        cdef double when = self.loop.time() + seconds
        heappush(self.heap, (when, self.seq, fut))
        self.seq += 1
        self.live += 1
        if self.handle is None or when < self.armed_at:
            if self.handle is not None:
                self.handle.cancel()
            self.armed_at = when
            self.handle = self.loop.call_at(when, self._fire)
        return 0

    cdef int finished(self, fut) except -1:
        if not fut.done():
            fut.cancel()  # done either way: skipped when its time comes
        self.live -= 1
        if self.live == 0:
            # Nobody waits: no loop timer left armed for waits that are over (the loop
            # would look at it on every round until it came due).
            if self.handle is not None:
                self.handle.cancel()
                self.handle = None
            self.heap.clear()
        elif len(self.heap) > 64 and len(self.heap) > 4 * self.live:
            self.heap = [e for e in self.heap if not e[2].done()]
            heapify(self.heap)
        return 0

    def _fire(self):
        self.handle = None
        cdef double now = self.loop.time()
        heap = self.heap
        while heap:
            entry = heap[0]
            fut = entry[2]
            if not fut.done():
                if <double>entry[0] > now:
                    break
                fut.set_result(False)
            heappop(heap)
        if heap:
            self.armed_at = heap[0][0]
            self.handle = self.loop.call_at(self.armed_at, self._fire)


@cython.final
cdef class TaskParker:
    """How a task waits for a connection: the core's parker interface (acquire(True,
    seconds) sleeps until release() or the time is up, like a held lock).

    It is made and acquired by the waiting task inside call(); release() comes from whoever
    hands it a connection: another task, the opener thread or the cleaner, so a wake-up
    from another thread is posted to the loop. A release before the acquire is kept (lock
    semantics), so a wake-up that races the timer is never lost."""
    cdef object loop
    cdef object fut
    cdef object wait                # None: step the future in call()'s greenlet; else wait(fut)
    cdef Expiries expiries          # the loop's shared timer; None: a timer of its own
    cdef object timer               # that timer of its own, while it sleeps
    cdef bint released

    def __cinit__(self, loop, wait=None, Expiries expiries=None):
        # wait: how to wait for a future where another bridge runs the pool (SQLAlchemy's
        # await_only, for FastAsyncQueuePool).
        self.loop = loop
        self.wait = wait
        self.expiries = expiries

    def acquire(self, blocking=True, double timeout=-1):
        if self.released:
            self.released = False
            return True
        g = None
        if self.wait is None:
            g = getcurrent()
            if type(g) is not Bridged:
                raise EventLoopError("fastpool.aio: a task waited outside fastpool's async calls")
        fut = self._arm(timeout)
        try:
            if g is None:
                return bool(self.wait(fut))
            return bool(step(g, fut))
        finally:
            self._disarm(fut, timeout)

    async def sleep(self, double seconds):
        """acquire(True, seconds) for a task that awaits it directly (checkout): True
        when released, False when the time (seconds < 0: none) is up."""
        if self.released:
            self.released = False
            return True
        fut = self._arm(seconds)
        try:
            return bool(await fut)
        finally:
            self._disarm(fut, seconds)

    cdef object _arm(self, double seconds):
        # The future a wait sleeps on, its time limit set (seconds < 0: none): on the
        # loop's shared timer, or on a timer of its own.
        fut = self.fut = self.loop.create_future()
        self.timer = None
        if seconds >= 0:
            if self.expiries is not None:
                self.expiries.add(seconds, fut)
            else:
                self.timer = self.loop.call_later(seconds, _expire, fut)
        return fut

    cdef int _disarm(self, fut, double seconds) except -1:
        self.fut = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        elif seconds >= 0 and self.expiries is not None:
            self.expiries.finished(fut)
        return 0

    def release(self):
        if _get_running_loop() is self.loop:
            self._wake()
            return
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:
            self.released = True  # the loop is gone; nobody is asleep

    def _wake(self):
        fut = self.fut
        if fut is not None and not fut.done():
            fut.set_result(True)
        else:
            self.released = True


def _expire(fut):
    if not fut.done():
        fut.set_result(False)


# ---- the DB-API face of an async driver's connection ---------------------------------
# The core calls raw.cursor(), cur.execute(), cur.fetchmany(), raw.rollback() and the
# dialect's driver calls as plain methods. SyncConnection gives an async driver's
# connection (asyncmy, aiomysql, aiosqlite, psycopg's AsyncConnection) that face: each call
# whose result is awaitable is awaited: stepped in place inside call(), or run on the
# pool's loop from a worker thread (fastpool/aio/bridge.py: run_on_loop).

cdef class SyncConnection:
    """An async driver connection behind a blocking DB-API face.

    It also remembers whether a call was cut off by something other than the driver's own
    error (a cancelled task, a timeout): the protocol may then be anywhere, so the pool
    discards the connection and ends its statement on the server."""

    def __init__(self, conn, loop):
        self.driver_connection = conn
        self.loop = loop
        self.interrupted = False
        self.closed = False
        self.attrs = {}
        self.one_call = hasattr(type(conn), "run_statement")

    cpdef object wait(self, object value):
        """value, awaited first if it is awaitable."""
        if not fp_awaitable(value):
            return value
        g = getcurrent()
        if type(g) is Bridged:
            try:
                return step(g, value)
            except Exception:
                raise
            except BaseException:
                self.interrupted = True
                raise
        from .aio.bridge import run_on_loop  # a worker thread: the slow path
        return run_on_loop(self.loop, value)

    def cursor(self, *args):
        cur = self.driver_connection.cursor(*args)
        if not hasattr(cur, "execute"):
            cur = self.wait(cur)  # aiomysql: a context manager to await; aiosqlite: a coroutine
        return SyncCursor(cur, self)

    def commit(self):
        self.wait(self.driver_connection.commit())

    def rollback(self):
        self.wait(self.driver_connection.rollback())

    def close(self):
        """Close it without a round trip where the driver can (asyncmy and aiomysql close
        the transport). Inside call() a close that is a coroutine (aiosqlite, psycopg) is
        awaited; from a worker thread the close is posted to the loop, which owns the
        driver's transport, and not waited for."""
        if self.closed:
            return
        self.closed = True
        conn = self.driver_connection
        if type(getcurrent()) is Bridged:
            try:
                self.wait(conn.close())
            except Exception:
                abort_transport(conn)
            return
        if not call_soon_on(self.loop, _close_driver, conn):
            abort_transport(conn)  # the loop is gone: at least free the socket

    def __getattr__(self, name):
        # The dialect's own calls (autocommit, begin, ping, thread_id, ...): awaited when
        # the driver's method is a coroutine. Attributes the dialect sets are kept here.
        try:
            return self.attrs[name]
        except KeyError:
            pass
        attr = getattr(self.driver_connection, name)
        if not callable(attr):
            return attr
        wait = self.wait

        def method(*args, **kwargs):
            return wait(attr(*args, **kwargs))

        return method

    def __setattr__(self, name, value):
        try:
            PyObject_GenericSetAttr(self, name, value)  # its own fields
        except AttributeError:
            self.attrs[name] = value

    def __repr__(self):
        return f"<fastpool.aio.SyncConnection of {self.driver_connection!r}>"


@cython.final
@cython.freelist(16)
cdef class SyncCursor:
    """An async driver cursor behind a blocking DB-API face."""
    cdef object _cur
    cdef SyncConnection _conn

    def __cinit__(self, cur, SyncConnection conn):
        self._cur = cur
        self._conn = conn

    def execute(self, sql, params=None):
        if params is None:
            return self._conn.wait(self._cur.execute(sql))
        return self._conn.wait(self._cur.execute(sql, params))

    def executemany(self, sql, seq):
        return self._conn.wait(self._cur.executemany(sql, seq))

    def fetchone(self):
        return self._conn.wait(self._cur.fetchone())

    def fetchmany(self, size=None):
        if size is None:
            return self._conn.wait(self._cur.fetchmany())
        return self._conn.wait(self._cur.fetchmany(size))

    def fetchall(self):
        return self._conn.wait(self._cur.fetchall())

    def close(self):
        res = self._cur.close()
        if self._conn.interrupted:
            # Its call was cut off (a cancelled task): the connection is to be discarded,
            # and a driver that queues its calls (aiosqlite) would run this close only after
            # the statement, however long that runs; the pool interrupts that statement
            # next. Not waited for (closed unrun, so it does not warn "never awaited").
            from .aio.bridge import _discard
            _discard(res)
            return
        self._conn.wait(res)

    @property
    def description(self):
        return self._cur.description

    @property
    def rowcount(self):
        return self._cur.rowcount

    @property
    def lastrowid(self):
        return getattr(self._cur, "lastrowid", None)

    def __iter__(self):
        while True:
            row = self.fetchone()
            if row is None:
                return
            yield row

    def __getattr__(self, name):
        return getattr(self._cur, name)


def call_soon_on(loop, fn, *args):
    """Run fn(*args) on loop: now if this is its thread, else soon. False if the loop is
    closed (nothing ran)."""
    if _get_running_loop() is loop:
        fn(*args)
        return True
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        return False
    return True


def _close_driver(conn):
    try:
        res = conn.close()
    except Exception:
        abort_transport(conn)
        return
    if fp_awaitable(res):
        # aiosqlite, psycopg: close() is a coroutine; let it finish on the loop.
        task = ensure_future(res)
        task.add_done_callback(_quiet)


def _quiet(task):
    if not task.cancelled():
        task.exception()  # retrieved: a failed close is not worth a warning


def abort_transport(conn):
    """Drop a driver connection's transport at once (its loop is gone, or its close
    failed): the socket is freed without a goodbye."""
    for attr in ("_transport", "_writer"):
        t = getattr(conn, attr, None)
        t = getattr(t, "transport", t)
        abort = getattr(t, "abort", None)
        if abort is not None:
            try:
                abort()
            except Exception:
                pass
            return
