# fastpool's compiled core: the pool state machine of Go's database/sql (free list,
# FIFO hand-off to waiters, put-back) behind one C-level lock.
#
# Rules that keep it correct on a free-threaded interpreter and deadlock-free on a GIL one:
#  * every field marked in _core.pxd as protected by `mu` is touched only with `mu` held;
#  * with `mu` held we run no Python code: no driver calls, no callbacks, no allocation of
#    objects the cyclic GC tracks (a collection could run a finalizer that re-enters the
#    pool), no decref that could free an object; everything else happens after unlock;
#  * a caller that must wait sleeps on its own Waiter lock with the GIL released (or, under
#    gevent / eventlet, on a cooperative parker that lets the hub run: Waiter in _core.pxd).
cimport cython
from cpython.contextvars cimport get_value
from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from cpython.pythread cimport (
    PY_LOCK_ACQUIRED, PY_LOCK_FAILURE, PY_LOCK_INTR, PyThread_acquire_lock, PyThread_allocate_lock,
    PyThread_free_lock, PyThread_release_lock, NOWAIT_LOCK,
)
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from cpython.sequence cimport PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from libc.math cimport INFINITY, fmax, frexp, isinf, ldexp
from libc.string cimport memcpy, memset
from libc.string cimport memmove

from contextvars import ContextVar
from random import Random as _Random

# The lifetime jitter's own generator: the pool never draws from (or moves) the global
# random state an application may have seeded; a background opener drawing from it also
# races Hypothesis's check that strategies leave it alone.
_random = _Random().random

import warnings

from fastpool.errors import (
    ConfigError, ConnectionLeakWarning, DeadlineExceeded, FastpoolError, PoolClosed, PoolTimeout,
    TooManyWaiting,
)

cdef enum:
    # What _get decided under the lock.
    A_GOT = 0
    A_OPEN = 1
    A_WAIT = 2
    A_NEED_WAITER = 3
    A_DISCARD = 4
    A_CLOSED = 5
    A_TIMEOUT = 6
    A_WAIT_OPEN = 7  # queued, and a connect asked of the opener (room under max_open)
    A_REFUSED = 8    # the pool is full and max_waiting callers already wait
    A_NONE = 9       # idle_only, and no idle connection: nothing taken, nothing counted

cdef enum:
    # Where a statement under a deadline stands with the watcher (ConnRecord.cancel_state).
    CANCEL_NONE = 0
    CANCEL_CLAIMED = 1   # past its deadline: the watcher is cancelling it
    CANCEL_KILLED = 2    # cancelled on the server (KILL QUERY, sqlite interrupt): in sync
    CANCEL_SHUT = 3      # its socket was shut down: the connection is gone
    CANCEL_UNSAFE = 4    # not settled in time: a KILL may still land, never pool it
    CANCEL_IGNORED = 5   # the driver cannot cancel: the statement runs on, as if unwatched

cdef enum:
    # Who holds a record (ConnRecord.site_kind), for the holders a PoolTimeout names.
    SITE_STATEMENT = 0   # a statement of the pool's own (execute, query_row, ...)
    SITE_CONN = 1
    SITE_TX = 2
    SITE_ROWS = 3        # a streaming Rows of the pool's
    SITE_LENT = 4        # a driver connection a drop-in lent out bare (fastpool/lending.py)

cdef tuple _SITE_NAMES = ("a statement", "a Conn", "a Tx", "a streaming Rows", "a connection")


cdef inline bint _cancel_spoiled(int cancel):
    # A cancel that did not end cleanly on the server (socket shut, or not settled in
    # time): the connection's state is unknown, it must never be pooled again.
    return cancel != CANCEL_NONE and cancel != CANCEL_KILLED


CANCEL_STATES = {"claimed": CANCEL_CLAIMED, "killed": CANCEL_KILLED, "shut": CANCEL_SHUT,
                 "ignored": CANCEL_IGNORED}

# The deadline of the current block (fastpool.deadline): an absolute time on the
# monotonic clock, or None. A ContextVar, so it follows a thread's own context,
# copy_context() and asyncio tasks.
DEADLINE = ContextVar("fastpool.deadline", default=None)

# Set for good the first time any deadline block is entered: until then no statement reads
# DEADLINE at all (a ContextVar lookup that misses walks the context's map), so a program
# that never uses deadlines pays nothing for them.
cdef bint _deadlines_used = False


def _use_deadlines():
    global _deadlines_used
    _deadlines_used = True


cdef inline double _block_deadline():
    # The current deadline block's deadline, INFINITY outside any block.
    v = get_value(DEADLINE)
    return INFINITY if v is None else <double>v

# How a driver error bears on the connection (the dialect decides; see dialects.py).
ERR_OK = 0           # the statement failed, the connection is fine
ERR_BROKEN = 1       # the connection is unusable: close it
ERR_RETRY = 2        # broken, and the statement provably never reached the server

# Go's maxBadConnRetries: two tries on pooled connections, then one on a new one.
cdef int MAX_BAD_CONN_RETRIES = 2
# Rows a streaming cursor fetches per call into its C-side buffer.
cdef Py_ssize_t STREAM_BATCH = 512
# Statements that open or end transactions or change autocommit: a connection they went
# through is reset (rolled back) before it is pooled again.
cdef tuple _TX_CONTROL = ("BEGIN", "START", "SET", "COMMIT", "ROLLBACK", "SAVEPOINT", "XA", "LOCK")

# Each connection's max_lifetime is shortened by up to this share, so that connections
# opened together (a burst, a restart) do not all expire together (psycopg#1100).
cdef double LIFETIME_JITTER = 0.1

# Bounded barging (Go's sync.Mutex "starvation mode", for connections). A connection given
# back while callers wait goes to the free list, where whoever asks first takes it (often
# the giver itself, looping): no sleep and wake-up per request. Each waiter sleeps at most
# HANDOFF_AFTER before it looks at the free list itself; finding nothing there it is
# starving, and from then on every give-back is handed straight to the oldest waiter until
# none starves. So a waiter is passed over for at most HANDOFF_AFTER, then served in
# arrival order. 0 restores strict hand-off on every give-back.
# The giver also hands over at once when the head of the queue has waited HANDOFF_AFTER,
# without waiting for the head's timer to say so, and whenever a "deep" waiter is queued:
# one that arrived behind a head that had waited over twice the bound. With many more
# callers than connections (256 threads on 16) every wait is longer than the bound; such a
# waiter sleeps without the timer that would only wake it to find nothing (see _get).
# Together: 0.80x the naive pool's throughput at 256 threads before, ~1.05x after.
cdef double HANDOFF_AFTER = 0.01

# The longest finite duration accepted (the façade's options.MAX_SECONDS).
cdef double MAX_SECONDS = 1e9

cdef inline long long _sleep_us(double seconds) noexcept nogil:
    # A sleep's length for fp_lock_acquire_timed: -1 no limit, else microseconds >= 0.
    if seconds < 0:
        return -1
    if seconds * 1e6 >= <double>FP_TIMEOUT_MAX_US:
        # Compare as doubles before converting: a cast of a double past the range of
        # long long is undefined behaviour in C.
        return FP_TIMEOUT_MAX_US
    return <long long>(seconds * 1e6)


@cython.final
cdef class _PoolDefault:
    """The default of a per-call timeout=: the pool's own timeout option."""

    def __repr__(self):
        return "POOL_DEFAULT"   # what help() and the API reference show as the default


cdef object _POOL_DEFAULT = _PoolDefault()   # "use the pool's timeout"
POOL_DEFAULT = _POOL_DEFAULT


# no_gc_clear: the collector never takes the driver connection out of a record; a record
# on its way back to the pool must arrive with it.
@cython.final
@cython.no_gc_clear
cdef class ConnRecord:
    def __repr__(self):
        state = ("idle", "in_use", "closed")[<int>self.state]
        return f"<fastpool ConnRecord {state} fd={self.fd} uses={self.uses}>"

    @property
    def state_name(self):
        return ("idle", "in_use", "closed")[<int>self.state]


@cython.final
cdef class Waiter:
    cdef int _make_sem(self) except -1:
        # Only a waiter that sleeps in C has a lock (a task or a greenlet sleeps on its
        # parker): one allocation fewer per wait for those.
        self.sem = PyThread_allocate_lock()
        if self.sem == NULL:
            raise MemoryError()
        # Taken now, so the waiter blocks until a giver releases it.
        PyThread_acquire_lock(self.sem, NOWAIT_LOCK)
        return 0

    def __dealloc__(self):
        if self.sem != NULL:
            PyThread_free_lock(self.sem)
            self.sem = NULL


cdef class CorePool:
    """The mechanism of a pool: free list, waiters, hand-off and counts.

    fastpool.Pool (the façade) subclasses this and supplies the policy: options,
    driver dialects, background workers.
    """

    def __cinit__(self, *args, **kwargs):
        if fp_mutex_init(&self.mu) != 0:
            raise MemoryError()
        self.free_conns = NULL
        self.n_free = self.cap_free = 0
        self.max_open_ = 10
        self.max_idle_ = 10
        self.min_idle_ = 0
        self.max_lifetime_ = INFINITY
        self.max_idle_time_ = INFINITY
        self.retired_at = -INFINITY
        self.timeout_ = 30.0
        self.statement_timeout_ = -1.0
        self.watch_at = INFINITY
        self.max_waiting_ = -1
        self.handoff_after_ = HANDOFF_AFTER

    def __init__(self, connect, *, close=None, fileno=None, need_open=None, clock=None,
                 max_open=10, max_idle=None, min_idle=0, max_lifetime=None,
                 max_idle_time=None, timeout=30.0):
        if not callable(connect):
            raise TypeError("connect must be a callable returning a DB-API connection")
        self.connect_fn = connect
        self.close_fn = close
        self.fileno_fn = fileno
        self.need_open_fn = need_open
        self.clock = clock
        self._set_limits(max_open, max_idle, min_idle)
        self._set_lifetimes(max_lifetime, max_idle_time)
        self._set_timeout(timeout)

    def __del__(self):
        # A pool dropped without close() (a SQLAlchemy engine, a pool made per request):
        # closed now, its idle connections with it, rather than left to the drivers' own
        # deallocation in whatever order the collector frees them. In-use connections keep
        # their pool alive, so there are none here.
        if not self.closed_:
            self._close_core()

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.free_conns != NULL:
            for i in range(self.n_free):
                Py_DECREF(<object>self.free_conns[i])
            PyMem_RawFree(self.free_conns)
            self.free_conns = NULL
        fp_mutex_free(&self.mu)

    # ---- clocks ------------------------------------------------------------------------
    cdef inline double _now(self):
        # Lifetimes and idle times are seconds; the coarse clock is good enough and cheap.
        if self.clock is None:
            return fp_now_coarse()
        return self.clock()

    cdef inline double _now_fine(self):
        if self.clock is None:
            return fp_now()
        return self.clock()

    # ---- helpers that expect mu held ---------------------------------------------------
    cdef int _push_free_locked(self, ConnRecord rec):
        cdef Py_ssize_t newcap
        cdef PyObject **p
        if self.n_free == self.cap_free:
            newcap = self.cap_free * 2 if self.cap_free else 16
            p = <PyObject **>PyMem_RawRealloc(self.free_conns, newcap * sizeof(PyObject *))
            if p == NULL:
                return -1
            self.free_conns = p
            self.cap_free = newcap
        Py_INCREF(rec)
        self.free_conns[self.n_free] = <PyObject *>rec
        self.n_free += 1
        return 0

    cdef bint _expired_locked(self, ConnRecord rec, double now):
        # True when rec has outlived max_lifetime (its jittered share of it); counts it.
        # Also when it was retired (_retire_open), uncounted: it did not age out.
        if rec.created_at <= self.retired_at:
            return True
        if now - rec.created_at >= self.max_lifetime_ * rec.lifetime_factor:
            self.max_lifetime_closed += 1
            return True
        return False

    cdef void _enqueue_locked(self, Waiter w):
        if w.fresh:
            self.n_fresh_waiters += 1
        if w.counted:
            self.n_full_waiters += 1
        if w.deep:
            self.n_deep += 1
        w.queued = True
        if w.requeued and self.wait_head is not None:
            # It was the head when it woke to try the free list and someone barged in
            # first: it keeps its place (Go's queueLifo), so its wait stays bounded.
            w.prev = None
            w.next = self.wait_head
            self.wait_head.prev = w
            self.wait_head = w
        else:
            w.next = None
            w.prev = self.wait_tail
            if self.wait_tail is None:
                self.wait_head = w
            else:
                self.wait_tail.next = w
            self.wait_tail = w
        self.n_waiters += 1

    cdef void _unlink_locked(self, Waiter w):
        # The caller holds its own reference to w, so dropping the list's cannot free it.
        if w.prev is None:
            self.wait_head = w.next
        else:
            w.prev.next = w.next
        if w.next is None:
            self.wait_tail = w.prev
        else:
            w.next.prev = w.prev
        w.next = None
        w.prev = None
        w.queued = False
        self.n_waiters -= 1
        if w.fresh:
            self.n_fresh_waiters -= 1
        if w.counted:
            self.n_full_waiters -= 1
        if w.starving:
            w.starving = False
            self.n_starving -= 1
        if w.deep:
            w.deep = False
            self.n_deep -= 1

    cdef void _note_wait_locked(self, double waited):
        # One counted wait (wait_count's): summed, and binned for stats()' percentiles.
        # Bins: 4 per power of two of microseconds, so a percentile is read to within 25%.
        cdef int e
        cdef double m
        cdef Py_ssize_t i = 0
        cdef double us = waited * 1e6
        self.wait_duration += waited
        if waited > self.wait_max:
            self.wait_max = waited
        if us >= 1.0:
            m = frexp(us, &e)                 # us = m * 2**e, 0.5 <= m < 1
            i = 1 + (e - 1) * 4 + <Py_ssize_t>((m - 0.5) * 8.0)
            if i >= WAIT_BUCKETS:
                i = WAIT_BUCKETS - 1
        self.wait_hist[i] += 1

    cdef Py_ssize_t _open_deficit_locked(self) noexcept nogil:
        # How many connections the background opener should open now: one for each waiter
        # nobody is opening for yet, plus what min_idle lacks; never past max_open. Idle
        # connections cover plain waiters and min_idle, but not a waiter that wants a new
        # connection (the last retry after bad ones).
        cdef Py_ssize_t n
        if self.closed_:
            return 0
        n = self.n_waiters - self.n_fresh_waiters + self.min_idle_ - self.n_free
        if n < 0:
            n = 0
        n += self.n_fresh_waiters - self.pending_opens
        if self.min_open_ - self.num_open > n:
            # Fewer open (num_open counts those being opened) than min_open keeps.
            n = self.min_open_ - self.num_open
        if self.max_open_ > 0 and n > self.max_open_ - self.num_open:
            n = self.max_open_ - self.num_open
        return n if n > 0 else 0

    # ---- opening and closing (never with mu held) ------------------------------------
    cdef ConnRecord _new_record(self, object raw):
        cdef ConnRecord rec = ConnRecord.__new__(ConnRecord)
        cdef long long fd = -1
        rec.raw = raw
        rec.owner = <void *>self
        rec.created_at = self._now()
        rec.returned_at = rec.created_at
        rec.taken_at = rec.created_at
        rec.lifetime_factor = 1.0 - LIFETIME_JITTER * _random()
        if self.fileno_fn is not None:
            try:
                fd = self.fileno_fn(raw)
            except Exception:
                fd = -1
        rec.fd = fd
        rec.state = REC_IN_USE
        rec.fork_gen = self.fork_gen
        fp_mutex_lock(&self.mu)
        # Linked at the head: pointer and reference moves only, nothing freed.
        rec.a_next = self.all_head
        if self.all_head is not None:
            self.all_head.a_prev = <PyObject *>rec
        self.all_head = rec
        rec.a_linked = True
        fp_mutex_unlock(&self.mu)
        return rec

    cdef ConnRecord _open_new(self):
        # The caller reserved a slot (num_open, num_opening) under mu.
        cdef ConnRecord rec = None
        cdef bint wake = False
        cdef bint was_closed = False
        cdef object raw
        try:
            raw = self.connect_fn()
            try:
                rec = self._new_record(raw)
            except BaseException:
                # Not pooled, so nobody else will close it (e.g. KeyboardInterrupt here).
                if self.close_fn is not None:
                    self.close_fn(raw)
                raise
        finally:
            fp_mutex_lock(&self.mu)
            self.num_opening -= 1
            if rec is None or self.closed_:
                self.num_open -= 1
                was_closed = self.closed_
                # A freed slot may let a waiter be served (Go's maybeOpenNewConnections).
                wake = self._open_deficit_locked() > 0
            fp_mutex_unlock(&self.mu)
            if wake and self.need_open_fn is not None:
                self.need_open_fn()
        if was_closed:
            rec.state = REC_CLOSED
            self._close_rec(rec)
            raise PoolClosed("pool is closed")
        rec.uses = 1
        return rec

    cdef void _unlink_all_locked(self, ConnRecord rec):
        # The caller holds its own reference to rec: dropping the list's frees nothing.
        cdef ConnRecord nxt = rec.a_next
        if not rec.a_linked:
            return
        rec.a_linked = False
        if nxt is not None:
            nxt.a_prev = rec.a_prev
        if rec.a_prev == NULL:
            self.all_head = nxt
        else:
            (<ConnRecord>rec.a_prev).a_next = nxt
        rec.a_prev = NULL
        rec.a_next = None

    cdef list _holders(self, Py_ssize_t most):
        # [(seconds held, who, code, lasti)] of the records in use, longest first, at
        # most `most`. The walk copies pointers (referenced) into C memory under mu; the
        # Python objects are made after.
        cdef Py_ssize_t n = 0, cap = 0, i
        cdef PyObject **found = NULL
        cdef double *since = NULL
        cdef ConnRecord rec
        cdef list out = []
        cdef double now = self._now()
        fp_mutex_lock(&self.mu)
        cap = self.num_open             # open records bound those in use (C memory only)
        if cap > 0:
            found = <PyObject **>PyMem_RawMalloc(cap * sizeof(PyObject *))
            since = <double *>PyMem_RawMalloc(cap * sizeof(double))
        if found != NULL and since != NULL:
            rec = self.all_head
            while rec is not None and n < cap:
                if rec.state == REC_IN_USE and rec.fork_gen == self.fork_gen:
                    Py_INCREF(rec)
                    found[n] = <PyObject *>rec
                    since[n] = rec.taken_at
                    n += 1
                rec = rec.a_next
        fp_mutex_unlock(&self.mu)
        for i in range(n):
            rec = <ConnRecord>found[i]
            Py_DECREF(rec)          # ours from the walk; rec (the variable) holds one
            out.append((now - since[i], _SITE_NAMES[rec.site_kind if 0 <= rec.site_kind <= 4 else 0],
                        rec.site_code, rec.site_lasti))
        PyMem_RawFree(found)
        PyMem_RawFree(since)
        out.sort(key=_first, reverse=True)
        return out[:most]

    def _longest_holders(self, Py_ssize_t most=3):
        """[(seconds held, "a Conn opened at app.py:42" or "a statement")] of the
        connections in use, the longest held first (at most `most`)."""
        return [(round(held, 3), _holder_text(who, code, lasti))
                for held, who, code, lasti in self._holders(most)]

    cdef int _close_rec(self, ConnRecord rec) except -1:
        # close_fn (the façade's) absorbs driver errors; an interrupt propagates.
        fp_mutex_lock(&self.mu)
        self._unlink_all_locked(rec)
        fp_mutex_unlock(&self.mu)
        rec.state = REC_CLOSED
        if self.close_fn is not None and not rec.lost:
            self.close_fn(rec.raw)
        return 0

    cdef double _timeout_arg(self, object timeout) except? -2.0:
        # A per-call timeout, validated as the pool option is (ConfigError naming it).
        cdef double t
        if timeout is _POOL_DEFAULT:
            return self.timeout_
        if timeout is None:
            return -1.0
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise ConfigError(f"timeout must be a number of seconds or None, got {type(timeout).__name__}")
        try:
            t = float(timeout)
        except OverflowError:
            raise ConfigError("timeout must be at most 1e9 seconds, or None for forever") from None
        if t != t or t < 0:
            raise ConfigError(f"timeout must be >= 0 seconds or None, got {t!r}")
        if isinf(t):
            return -1.0
        if t > MAX_SECONDS:
            raise ConfigError(f"timeout must be at most 1e9 seconds, or None for forever, got {t!r}")
        return t

    # ---- checkout ----------------------------------------------------------------------
    cdef ConnRecord _get(self, double timeout, bint fresh=False, bint by_deadline=False,
                         bint idle_only=False, Waiter given=None):
        # timeout < 0 waits forever; 0 never waits. fresh: open a new connection rather
        # than reuse an idle one (the last retry, as Go's alwaysNewConn), room permitting.
        # idle_only: an idle connection (checked as ever) or None at once, nothing else:
        # no wait, no connect, no timeout counted (fastpool.aio's native route).
        # given: the caller's own waiter (a task that sleeps natively, _get_for_task):
        # where it must wait, _get queues it and returns None; the caller takes the
        # _wait steps itself.
        #
        # A caller that finds room under max_open does not connect in its own thread: a
        # connect can hang (a half-open network) far past the caller's timeout. It queues
        # like any waiter and the opener connects for the queue; whatever comes first, a
        # connection given back or the new one, is handed to the oldest waiter, and a
        # connection that arrives after its caller gave up goes to the next waiter or the
        # free list. Only timeout=0 ("never wait") still connects in the caller's thread.
        cdef ConnRecord rec = None
        cdef Waiter w = None
        cdef int action
        cdef bint wake
        cdef bint room
        cdef bint expired
        cdef double now
        cdef double t0 = 0.0
        if given is not None:
            w = given
            if w.t0 == 0.0:
                w.t0 = self._now_fine()
            t0 = w.t0
        while True:
            now = self._now()
            wake = False
            fp_mutex_lock(&self.mu)
            if w is not None and w.rec is not None:
                # w's timer found an idle connection and took it off the free list for w
                # in that critical section (_wait_step): here it gets the checks any idle
                # connection gets (below), with nothing else to decide. (Taken before a
                # close(), it is w's as a hand-off would be; the closed pool closes it when
                # it comes back.)
                rec = w.rec
                w.rec = None
                action = A_GOT
            elif self.closed_:
                action = A_CLOSED
            elif self.n_free > 0 and not (fresh and (self.max_open_ <= 0 or self.num_open < self.max_open_)):
                rec = self._take_free_locked(now, &expired)
                action = A_DISCARD if expired else A_GOT
                if (self.min_idle_ | self.n_waiters) > 0:   # both >= 0: one test
                    # Taking an idle connection from under waiters (barging) can leave one
                    # with room under max_open and nobody opening for it.
                    wake = self._open_deficit_locked() > 0
            elif idle_only:
                action = A_NONE
            elif (timeout == 0 or self.inline_connect) and (self.max_open_ <= 0 or self.num_open < self.max_open_):
                self.num_open += 1
                self.num_opening += 1
                action = A_OPEN
            elif timeout == 0:
                self.timeouts += 1
                action = A_TIMEOUT
            elif w is None:
                action = A_NEED_WAITER
            else:
                room = self.max_open_ <= 0 or self.num_open < self.max_open_
                if not room and not w.requeued and 0 <= self.max_waiting_ <= self.n_full_waiters:
                    # Load shedding: refuse at once rather than pile up behind a full pool.
                    # Callers waiting for a connect made for them are not counted: there are
                    # never more of them than free slots under max_open.
                    self.waits_refused += 1
                    fp_mutex_unlock(&self.mu)
                    raise self._refused_error()
                w.fresh = fresh and room
                w.counted = not room
                w.t0 = t0                   # a giver reads its age (_put)
                w.starve_at = t0 + self.handoff_after_
                # Queued behind a waiter that has waited over twice the barging bound: the
                # queue is deep (256 threads on 16 connections), this caller will wait past
                # the bound too, and its timer would only wake it to find nothing (one
                # wake-up per request: 20% of the throughput there). While it waits every
                # give-back is a hand-off (_put), so the free list stays empty (it is empty
                # now: a counted waiter queues only when there is no idle connection), and
                # its timer is a safety net set late: twice the head's wait so far.
                w.deep = (not room and not w.requeued and self.wait_head is not None
                          and now - self.wait_head.t0 > 2 * self.handoff_after_)
                if w.deep:
                    w.starve_at = t0 + 2 * (now - self.wait_head.t0)
                self._enqueue_locked(w)
                if room:
                    # The connect this arrival asks for is reserved here, in the critical
                    # section that queues it (Go's maybeOpenNewConnections under db.mu):
                    # no snapshot sees a waiter the pool has not yet started opening for.
                    # The opener takes the reservations (_take_reserved_opens).
                    wake = self._reserve_opens_locked() > 0
                    action = A_WAIT_OPEN
                else:
                    if not w.in_count:
                        w.in_count = True
                        self.wait_count += 1
                    action = A_WAIT
            fp_mutex_unlock(&self.mu)

            if wake and self.need_open_fn is not None:
                # Python code: a signal can land in it. Settle what we hold first.
                try:
                    self.need_open_fn()
                except BaseException:
                    if action == A_GOT:
                        self._put(rec, False, False)
                    elif action == A_WAIT_OPEN:
                        self._abandon_wait(w)
                        self._drop_reserved_opens()
                    raise
            if action == A_GOT:
                if w is not None:
                    # A waiter that woke to an idle connection and took it: its wait counts.
                    rec.waited = self._now_fine() - t0
                    if w.in_count:
                        fp_mutex_lock(&self.mu)
                        self._note_wait_locked(rec.waited)
                        fp_mutex_unlock(&self.mu)
                        w.in_count = False
                # An idle connection whose socket turned readable was closed by the server
                # (wait_timeout, KILL, restart): replace it, the caller never sees it.
                if rec.fd >= 0:
                    if fp_fd_dead(rec.fd):
                        self._discard_dead(rec, "dead")
                        rec = None
                        continue
                elif self._dead_hook is not None:
                    # No socket to poll (an asyncio driver: its loop reads the socket):
                    # the dialect reads what the driver already knows, no round trip.
                    try:
                        dead = self._dead_hook(rec.raw)
                    except BaseException:
                        self._discard_dead(rec, "dead")
                        raise
                    if dead:
                        self._discard_dead(rec, "dead")
                        rec = None
                        continue
                if self._check_hook is not None and now - rec.returned_at >= self.check_after_:
                    # The operator's check (fastpool/hooks.py): False discards the
                    # connection and the caller gets another; an exception it lets through
                    # (an interrupt, a deadline) reaches the caller, the connection closed.
                    try:
                        ok = self._check_hook(rec)
                    except BaseException:
                        self._discard_dead(rec, "check failed")
                        raise
                    if not ok:
                        self._discard_dead(rec, "check failed")
                        rec = None
                        continue
                return rec
            if action == A_OPEN:
                t0 = self._now_fine()
                rec = self._open_new()
                rec.waited = self._now_fine() - t0
                return rec
            if action == A_DISCARD:
                self._close_rec(rec)
                rec = None
                continue
            if action == A_NEED_WAITER:
                t0 = self._now_fine()
                w = Waiter.__new__(Waiter)   # allocated outside the lock, then try again
                w.by_deadline = by_deadline
                if self._new_parker is not None:
                    w.parker = self._new_parker()
                if w.parker is None:
                    w._make_sem()
                continue
            if action == A_WAIT or action == A_WAIT_OPEN:
                if given is not None:
                    self._wait_init(w, timeout, t0)
                    return None
                rec = self._wait(w, timeout, t0)
                if rec is None:
                    # It woke to an idle connection (W_RETRY): take it like anyone else,
                    # checks included, or queue again at the head.
                    w.requeued = True
                    w.outcome = W_PENDING
                    continue
                return rec
            if action == A_CLOSED:
                raise PoolClosed("pool is closed")
            if action == A_NONE:
                return None
            raise self._timeout_error(0.0)

    cdef int _sleep(self, Waiter w, double seconds) except -2:
        # Sleep until woken or `seconds` pass (< 0: no limit): 1 woken, 0 time is up,
        # -1 a signal arrived (C sleep only; its handler has not run yet). The one place
        # where a thread and a greenlet differ.
        cdef long long us
        cdef int r
        if w.parker is not None:
            return 1 if w.parker.acquire(True, seconds if seconds >= 0 else -1) else 0
        us = _sleep_us(seconds)
        # A waiter whose timer ends this sleep usually finds nothing on the free list and
        # becomes starving; it does that here without taking the GIL back (with 240 threads
        # queued, one GIL round per waiter on top of its hand-off cost 20% of throughput),
        # and sleeps on until it is handed a connection or its timeout.
        cdef bint settle = w.timer and self.clock is None
        with nogil:
            r = fp_lock_acquire_timed(w.sem, us, 1)
            if r == PY_LOCK_FAILURE and settle and self._starve_detached(w):
                # Past its deadline already: a zero sleep, never "no limit".
                us = -1 if w.timeout_ < 0 else _sleep_us(fmax(w.deadline_ - fp_now(), 0.0))
                r = fp_lock_acquire_timed(w.sem, us, 1)
        if r == PY_LOCK_ACQUIRED:
            return 1
        return -1 if r == PY_LOCK_INTR else 0

    cdef Waiter _first_plain_waiter_locked(self):
        # The longest waiter that takes any connection (not one waiting for a new one).
        cdef Waiter h = self.wait_head
        while h is not None and h.fresh:
            h = h.next
        return h

    cdef ConnRecord _take_free_locked(self, double now, bint *expired):
        # Take an idle connection off the free list (the newest; the oldest with
        # fifo_reuse) and mark it taken. *expired: it was past its lifetime instead: it is
        # counted closed here, and the caller closes it outside the lock.
        cdef ConnRecord rec
        self.n_free -= 1
        if self.fifo_reuse:
            # The oldest first: every connection kept in turn (SQLAlchemy's
            # use_lifo=False). The list is short; moving it costs little.
            rec = <ConnRecord>self.free_conns[0]
            memmove(self.free_conns, self.free_conns + 1, self.n_free * sizeof(PyObject *))
        else:
            rec = <ConnRecord>self.free_conns[self.n_free]   # takes a reference
        Py_DECREF(rec)                                     # the list's, not ours
        if self._expired_locked(rec, now):
            self.num_open -= 1
            rec.state = REC_CLOSED
            expired[0] = True
        else:
            rec.state = REC_IN_USE
            rec.uses += 1
            rec.taken_at = now
            rec.waited = 0.0
            expired[0] = False
        return rec

    cdef bint _starve_detached(self, Waiter w) noexcept nogil:
        # _wait_step's timer step, when there is nothing to do but mark w starving: w still
        # queued, no idle connection it may take, no connect to ask for. False: the GIL
        # path decides (and nothing was changed).
        if fp_now() < w.starve_at:
            return False
        fp_mutex_lock_detached(&self.mu)
        if (not w.queued or (self.n_free > 0 and not w.fresh)
                or self._open_deficit_locked() > 0):
            fp_mutex_unlock(&self.mu)
            return False
        w.starving = True
        self.n_starving += 1
        fp_mutex_unlock(&self.mu)
        w.timer = False
        return True

    cdef int _wake_waiter(self, Waiter w) except -1:
        # Called after unlocking mu, so it does not wake only to block on mu.
        if w.parker is None:
            PyThread_release_lock(w.sem)
        else:
            w.parker.release()
        return 0

    cdef ConnRecord _wait(self, Waiter w, double timeout, double t0):
        # Returns the connection handed to w, raises, or returns None when w woke to find
        # an idle connection it may take (W_RETRY: the caller goes round _get again).
        # The steps are _wait_init, _wait_seconds, _wait_step and _wait_end: a task that
        # waits natively (fastpool.aio, _bridge.checkout) takes the same steps, with its
        # sleep awaited instead.
        cdef int r
        cdef int st
        self._wait_init(w, timeout, t0)
        while True:
            try:
                r = self._sleep(w, self._wait_seconds(w))
            except BaseException:
                # gevent's Timeout, a GreenletExit, an interrupt: leave the queue, giving
                # back anything handed over meanwhile.
                self._abandon_wait(w)
                raise
            if r == -1:
                # A signal arrived (only the main thread gets them): run its handler; if it
                # raised (KeyboardInterrupt), leave the queue, giving back anything we were
                # handed in the meantime, so the connection is neither lost nor doubled.
                try:
                    PyErr_CheckSignals()
                except BaseException:
                    self._abandon_wait(w)
                    raise
                continue
            st = self._wait_step(w, r)
            if st == WS_AGAIN:
                continue
            if st == WS_RETRY:
                return None
            return self._wait_end(w)

    cdef void _wait_init(self, Waiter w, double timeout, double t0):
        w.t0 = t0
        w.timeout_ = timeout
        w.deadline_ = t0 + timeout
        w.late = False

    cdef double _wait_seconds(self, Waiter w):
        # How long w sleeps next (-1: no limit), and whether that sleep ends at its
        # starvation time (w.timer) rather than its timeout.
        cdef double now = self._now_fine()
        cdef double seconds
        if w.timeout_ < 0:
            seconds = -1.0
        else:
            seconds = w.deadline_ - now if w.deadline_ > now else 0.0
        # Until it starves a waiter also wakes at starve_at, to look at the free list
        # itself: a connection given back while it slept went there, not to it.
        w.timer = (self.handoff_after_ > 0 and not w.starving
                   and (w.timeout_ < 0 or w.starve_at < w.deadline_))
        if w.timer:
            seconds = w.starve_at - now if w.starve_at > now else 0.0
        return seconds

    cdef int _wait_step(self, Waiter w, int r) except -1:
        # After a sleep of w ended: r 1 woken, 0 its time was up. WS_DONE: w's outcome is
        # settled (_wait_end); WS_AGAIN: sleep again; WS_RETRY: it may take an idle
        # connection (back to _get). Raises PoolTimeout when its time ran out.
        cdef bint wake
        cdef bint expired
        cdef int st
        cdef double waited
        cdef ConnRecord rec
        cdef ConnRecord rec_to_close = None
        if r == 1:
            return WS_DONE
        if w.timer:
            if self._now_fine() < w.starve_at:
                return WS_AGAIN     # an injected clock that has not moved yet (tests)
            fp_mutex_lock(&self.mu)
            if not w.queued:
                # Handed a connection (or the pool's end) as the timer fired; the giver's
                # wake-up is still on its way, and nobody needs it.
                fp_mutex_unlock(&self.mu)
                return WS_DONE
            if self.n_free > 0 and not w.fresh:
                if self._first_plain_waiter_locked() is not w:
                    # A waiter ahead of w is due to take it (its timer fires no later than
                    # w's): taking it here would serve w first. w looks again shortly, and
                    # does not mark itself starving while a connection is idle (a starving
                    # waiter sleeps without a timer, trusting give-backs to reach it).
                    w.starve_at = self._now_fine() + self.handoff_after_ * 0.1
                    fp_mutex_unlock(&self.mu)
                    return WS_AGAIN
                self._unlink_locked(w)
                w.outcome = W_RETRY
                # The connection is taken for w here, in the critical section that found
                # it: once w has left the queue the next waiter is the first, and its timer
                # could take the connection before w's thread is back in _get (seen with
                # the GIL off: the head then slept to its timeout). _get gives w.rec the
                # checks an idle connection gets.
                rec = self._take_free_locked(self._now(), &expired)
                if expired:
                    rec_to_close = rec
                else:
                    w.rec = rec
                wake = (self.min_idle_ | self.n_waiters) > 0 and self._open_deficit_locked() > 0
                st = WS_RETRY
            else:
                w.starving = True
                self.n_starving += 1
                wake = self._open_deficit_locked() > 0
                st = WS_AGAIN
            fp_mutex_unlock(&self.mu)
            if rec_to_close is not None:
                self._close_rec(rec_to_close)   # _get looks again for w
            if wake and self.need_open_fn is not None:
                try:
                    self.need_open_fn()
                except BaseException:
                    self._abandon_wait(w)
                    raise
            return st
        # Timed out.
        if self._after_wait_hook is not None:
            self._after_wait_hook()
        waited = self._now_fine() - w.t0
        fp_mutex_lock(&self.mu)
        if w.queued:
            self._unlink_locked(w)
            w.outcome = W_TIMEOUT
            self.timeouts += 1
            if w.in_count:
                self._note_wait_locked(waited)
        fp_mutex_unlock(&self.mu)
        if w.outcome == W_TIMEOUT:
            raise self._timeout_error(w.timeout_, w.by_deadline)
        # A giver handed us something between our timeout and our taking the lock.
        w.late = True
        return WS_DONE

    cdef ConnRecord _wait_end(self, Waiter w):
        # w's outcome, settled: the connection handed to it, or the error it was given.
        cdef ConnRecord rec
        cdef double waited = self._now_fine() - w.t0
        if w.in_count:
            fp_mutex_lock(&self.mu)
            self._note_wait_locked(waited)
            fp_mutex_unlock(&self.mu)
        if w.outcome == W_GOT:
            rec = w.rec
            w.rec = None
            rec.waited = waited
            if w.late:
                # Our deadline has passed: the caller gets PoolTimeout as promised, and the
                # connection goes on to the next waiter (or the free list). Never lost.
                self._put(rec, False, False)
                fp_mutex_lock(&self.mu)
                self.timeouts += 1
                fp_mutex_unlock(&self.mu)
                raise self._timeout_error(w.timeout_, w.by_deadline)
            return rec
        if w.outcome == W_ERROR:
            err, w.err = w.err, None
            raise err
        raise PoolClosed("pool is closed")

    cdef object _timeout_error(self, double waited, bint by_deadline=False):
        # PoolTimeout with the counts; a recent connect failure is its cause (as HikariCP
        # does), so a pool that cannot reach its database says why. A wait that a deadline
        # block cut short is DeadlineExceeded, with that PoolTimeout as its cause.
        exc = PoolTimeout(self._timeout_message(waited))
        exc.__cause__ = self._last_connect_error
        if self._event_hook is not None:
            self._event_hook("timeout", None, waited, "deadline" if by_deadline else "timeout")
        if by_deadline:
            return self._deadline_error(exc, f"waiting {waited:.3f}s for a connection", False)
        return exc

    def _refused_error(self):
        if self._event_hook is not None:
            self._event_hook("timeout", None, 0.0, "max_waiting")
        return TooManyWaiting(
            f"too many callers waiting for a connection (max_waiting={self.max_waiting_});"
            f" refused at once ({self._counts_text()})")

    def _abandon_wait(self, Waiter w):
        cdef ConnRecord rec = None
        fp_mutex_lock(&self.mu)
        if w.queued:
            self._unlink_locked(w)
            w.outcome = W_TIMEOUT
        elif w.rec is not None:
            # Handed to w (W_GOT), or taken for it by its timer on its way back to _get.
            rec = w.rec
            w.rec = None
        fp_mutex_unlock(&self.mu)
        w.err = None
        if rec is not None:
            self._put(rec, False, False)

    def _timeout_message(self, double waited):
        # The counts, and who holds the connections longest: a forgotten getconn() or
        # stream is named by the line that took it.
        held = "; ".join(f"{_holder_text(who, code, lasti)} for {secs:.1f}s"
                         for secs, who, code, lasti in self._holders(3))
        return (f"timed out after {waited:.3f}s waiting for a connection ({self._counts_text()})"
                + (f"; held longest by {held}" if held else ""))

    def _counts_text(self):
        s = self._counts()
        return (f"max_open={s[0]}, open={s[1]}, in_use={s[2]}, idle={s[3]}, "
                f"waiting={s[4]}, opening={s[13]}, timeouts={s[10]}")

    # ---- put-back (Go's putConn / putConnDBLocked) -----------------------------------
    cdef int _put(self, ConnRecord rec, bint bad, bint held, bint opened=False) except -1:
        # held: its holder gives it back (a checkin: use_time), not the opener or a
        # waiter that was handed it too late. opened: the opener's new connection, whose
        # connect stops counting as in flight in the same critical section that pools it
        # or hands it over (see _opened).
        cdef Waiter w = None
        cdef bint close_it = False
        cdef bint orphan = False
        cdef bint wake = False
        cdef int err = 0
        cdef double now
        if rec.owner != <void *>self:
            raise FastpoolError("connection belongs to another pool")
        now = self._now()
        if rec.site_code is not None or rec.site_kind != SITE_STATEMENT:
            rec.site_kind = SITE_STATEMENT   # its holder is done with it
            rec.site_code = None
        fp_mutex_lock(&self.mu)
        if opened:
            self.num_opening -= 1
            self.pending_opens -= 1
        if held and rec.state == REC_IN_USE:
            self.checkins += 1
            self.use_time += now - rec.taken_at
        if rec.state != REC_IN_USE:
            err = 1
        elif rec.fork_gen != self.fork_gen:
            # Inherited from the parent process: not ours to pool or to close.
            rec.state = REC_CLOSED
            self._unlink_all_locked(rec)
            orphan = True
        elif bad:
            self.num_open -= 1
            if rec.lost:
                pass                           # counted in leaks_reclaimed
            elif rec.holder_discard:
                self.holder_discards += 1      # its holder's choice, not a broken one
            else:
                self.bad_conns_discarded += 1
            close_it = True
        elif self.closed_ or (self.max_open_ > 0 and self.num_open > self.max_open_):
            self.num_open -= 1
            close_it = True
        elif self._expired_locked(rec, now):
            self.num_open -= 1
            close_it = True
        elif self.wait_head is not None and (
                not held or self.n_starving > 0 or self.n_deep > 0 or self.handoff_after_ <= 0
                or now - self.wait_head.t0 >= self.handoff_after_
                or (self.max_idle_ >= 0 and self.n_free >= self.max_idle_)):
            # Hand straight to the longest waiter once one starves, the head has waited
            # HANDOFF_AFTER (bounded barging, see there) or the queue is deep (see _get);
            # and always a connection that was not given back by its holder (a new one
            # the opener made for the waiters, one a waiter got too late).
            w = self.wait_head
            self._unlink_locked(w)
            w.rec = rec
            w.outcome = W_GOT
            rec.uses += 1
            rec.taken_at = now
        elif self.max_idle_ < 0 or self.n_free < self.max_idle_:
            if self._push_free_locked(rec) == 0:
                rec.state = REC_IDLE
                rec.returned_at = now
            else:
                self.num_open -= 1
                close_it = True
        else:
            self.num_open -= 1
            self.max_idle_closed += 1
            close_it = True
        if close_it:
            rec.state = REC_CLOSED
            wake = self._open_deficit_locked() > 0
        fp_mutex_unlock(&self.mu)

        if err:
            raise FastpoolError("connection was already returned to the pool")
        if w is not None:
            self._wake_waiter(w)
        elif close_it:
            self._close_rec(rec)
        elif orphan:
            self._orphaned(rec.raw)
        if wake and self.need_open_fn is not None:
            self.need_open_fn()
        return 0

    cdef int _discard_dead(self, ConnRecord rec, str reason) except -1:
        # A connection just taken from the free list that must not be used: closed, and
        # its slot freed for a new one.
        cdef bint wake
        fp_mutex_lock(&self.mu)
        self.num_open -= 1
        self.bad_conns_discarded += 1
        rec.state = REC_CLOSED
        wake = self._open_deficit_locked() > 0
        fp_mutex_unlock(&self.mu)
        try:
            if self._event_hook is not None:
                self._event_hook("discard", rec, 0.0, reason)
        finally:
            self._close_rec(rec)
            if wake and self.need_open_fn is not None:
                self.need_open_fn()
        return 0

    def _orphaned(self, raw):
        """Called for a connection inherited across fork(); the façade overrides it."""

    # ---- public mechanism ------------------------------------------------------------
    # ---- checkout / checkin as the API objects see them ------------------------------
    cdef ConnRecord _checkout(self, double timeout, bint fresh):
        return self._checkout_within(timeout, fresh, _block_deadline() if _deadlines_used else INFINITY)

    cdef ConnRecord _checkout_within(self, double timeout, bint fresh, double block):
        # block: the current deadline block's deadline, INFINITY for none.
        cdef ConnRecord rec
        if block != INFINITY:
            rec = self._get_within(timeout, fresh, block)
        else:
            rec = self._get(timeout, fresh)
        self._checked_out(rec)
        return rec

    cdef int _checked_out(self, ConnRecord rec) except -1:
        # Every checkout ends here: the holder hook (leak_timeout, checkout listeners) and
        # the sampled probe; either raising gives the connection back.
        if self._holder_hook is not None:
            try:
                self._holder_hook(rec, True)
            except BaseException:
                self._put(rec, False, True)
                raise
        if self._probe_hook is not None and (rec.uses & 63) == 1:
            # Sampled: each connection's first checkout and every 64th after (uses is
            # this holder's to read), so a pool used from the wrong place is told soon, at
            # no cost per checkout beyond this test.
            try:
                self._probe_hook()
            except BaseException:
                self._put(rec, False, True)
                raise
        return 0

    cdef int _checkin(self, ConnRecord rec, bint bad, bint probed_clean=False) except -1:
        # The one way back for a connection its holder had: the holder hook (leak_timeout,
        # checkin listeners), the operator's reset hook, then the free list or a waiter.
        # probed_clean: the caller has just read the clean probe (_give_back_quiet).
        cdef str why = "broken"
        if self._holder_hook is not None:
            try:
                self._holder_hook(rec, False)
            except BaseException:
                self._put(rec, bad, True)
                raise
        if not bad and self._reset_hook is not None:
            try:
                if probed_clean or (self._clean_probe is not None
                                    and self._clean_probe(rec.raw) == self._clean_value):
                    pass  # clean: nothing for the dialect's reset to do, no Python frame
                elif not self._reset_hook(rec):
                    bad = True
                    why = "reset failed"
            except BaseException:
                self._put(rec, True, True)
                raise
        self._put(rec, bad, True)
        if bad and self._event_hook is not None:
            if rec.lost:
                why = "dropped by its holder without being given back"
            elif rec.holder_discard:
                why = "discarded by its holder"
            self._event_hook("discard", rec, 0.0, why)
        return 0

    cdef int _error_kind(self, BaseException exc) except -1:
        if self._classify is not None:
            try:
                return self._classify(exc)
            except BaseException:
                # The classifier failed, or a second signal landed in it. Every caller
                # settles the connection right after asking, and a connection whose state
                # nobody could judge must not be pooled: broken. (An exception is already
                # on its way to the caller; losing the connection's slot would be worse.)
                return ERR_BROKEN
        # Without a dialect: an interrupt mid-statement leaves the protocol state unknown.
        return ERR_OK if isinstance(exc, Exception) else ERR_BROKEN

    # ---- deadlines (fastpool.deadline, statement_timeout) ---------------------------
    cdef ConnRecord _get_within(self, double timeout, bint fresh, double block):
        # _get, with a deadline block bounding the wait like a timeout that ends in
        # DeadlineExceeded, and so the connect made for it. timeout=0 stays "never wait".
        cdef double left = block - fp_now()
        if left <= 0:
            raise self._deadline_error(None, "before a connection could be had", False)
        if timeout == 0 or (timeout >= 0 and timeout <= left):
            return self._get(timeout, fresh)
        return self._get(left, fresh, True)

    # Free when unused: one ContextVar read and one comparison per statement. Under a
    # deadline a statement links its record into watch_head (one lock round) and unlinks
    # it when done; the watcher thread (fastpool/deadlines.py) cancels what runs past it.
    cdef inline double _stmt_deadline(self):
        return self._stmt_deadline_within(_block_deadline() if _deadlines_used else INFINITY)

    cdef inline double _stmt_deadline_within(self, double block):
        # The deadline of a statement starting now: the block's, shortened by
        # statement_timeout. INFINITY when neither is set.
        cdef double d = block
        cdef double t
        if self.statement_timeout_ >= 0:
            t = fp_now_coarse() + self.statement_timeout_   # ms precision is plenty here
            if t < d:
                d = t
        return d

    cdef int _watch_begin(self, ConnRecord rec, double deadline, bint check=True) except -1:
        # Register rec's statement; 0 if its deadline has already passed (nothing sent).
        # check=False: the caller has just made sure it has not (a checkout under it).
        cdef bint wake = False
        # The precise clock: the coarse one lags by up to a tick, and a deadline that has
        # passed must send nothing.
        if check and fp_now() >= deadline:
            return 0
        fp_mutex_lock(&self.mu)
        rec.watched = True
        rec.stmt_deadline = deadline
        rec.cancel_state = CANCEL_NONE
        rec.w_prev = None
        rec.w_next = self.watch_head
        if self.watch_head is not None:
            self.watch_head.w_prev = rec
        self.watch_head = rec
        if deadline < self.watch_at:
            self.watch_at = deadline      # so the next registrations do not wake it again
            wake = True
        fp_mutex_unlock(&self.mu)
        if wake and self._wake_watcher is not None:
            self._wake_watcher()
        return 1

    cdef int _watch_end(self, ConnRecord rec) except -1:
        # Unregister; return the cancel state. A cancel the watcher has claimed is waited
        # for: a KILL QUERY still on its way must not land on the next holder's statement.
        cdef int state
        fp_mutex_lock(&self.mu)
        if rec.watched:
            if rec.w_prev is None:
                self.watch_head = rec.w_next
            else:
                rec.w_prev.w_next = rec.w_next
            if rec.w_next is not None:
                rec.w_next.w_prev = rec.w_prev
            rec.w_next = rec.w_prev = None   # the caller's reference keeps rec alive
            rec.watched = False
        state = rec.cancel_state
        fp_mutex_unlock(&self.mu)
        if state == CANCEL_CLAIMED and self._await_cancel is not None:
            self._await_cancel(rec)
            fp_mutex_lock(&self.mu)
            state = rec.cancel_state
            if state == CANCEL_CLAIMED:
                state = CANCEL_UNSAFE
            fp_mutex_unlock(&self.mu)
        rec.cancel_state = CANCEL_NONE
        return CANCEL_NONE if state == CANCEL_IGNORED else state

    cdef object _deadline_error(self, object cause, str during, bint statement=True):
        # statement: raised at a statement (or hook), which statement_timeout also bounds;
        # False: at the wait for a connection, which only a deadline block bounds.
        cdef double block = _block_deadline() if _deadlines_used else INFINITY
        fp_mutex_lock(&self.mu)
        self.deadlines_exceeded += 1
        fp_mutex_unlock(&self.mu)
        if (statement and self.statement_timeout_ >= 0
                and (block == INFINITY or block > fp_now() + 0.005)):
            # The statement's own ceiling ended it, not a deadline block: say which.
            exc = DeadlineExceeded(f"statement_timeout ({self.statement_timeout_:g}s) exceeded {during}")
        else:
            exc = DeadlineExceeded(f"deadline exceeded {during}")
        exc.__cause__ = cause
        return exc

    def _claim_expired(self, double now, double idle_until=INFINITY):
        """Watcher: claim the statements past their deadline (each is then the watcher's to
        cancel) and say when to look next: the earliest deadline still running, or
        idle_until if that is sooner (the watcher will look then anyway, so registrations
        with later deadlines need not wake it). Returns (claimed records, next deadline)."""
        cdef list claimed = []
        cdef ConnRecord rec
        cdef double nxt = INFINITY
        cdef Py_ssize_t n = 0
        # Count first, allocate outside the lock (a list append may allocate).
        fp_mutex_lock(&self.mu)
        rec = self.watch_head
        while rec is not None:
            if rec.cancel_state == CANCEL_NONE and rec.stmt_deadline <= now:
                n += 1
            rec = rec.w_next
        fp_mutex_unlock(&self.mu)
        claimed = [None] * (n + 8)
        n = 0
        fp_mutex_lock(&self.mu)
        rec = self.watch_head
        while rec is not None:
            if rec.cancel_state == CANCEL_NONE:
                if rec.stmt_deadline <= now and n < len(claimed):
                    rec.cancel_state = CANCEL_CLAIMED
                    claimed[n] = rec          # replaces None: frees nothing
                    n += 1
                elif rec.stmt_deadline < nxt:
                    nxt = rec.stmt_deadline
            rec = rec.w_next
        self.watch_at = nxt if nxt < idle_until else idle_until
        fp_mutex_unlock(&self.mu)
        return claimed[:n], nxt

    def _settle_cancel(self, ConnRecord rec not None, int state):
        """Watcher: a claimed cancel is done (CANCEL_KILLED or CANCEL_SHUT). Returns False
        if it was no longer claimed (settled already)."""
        cdef bint ok
        fp_mutex_lock(&self.mu)
        ok = rec.cancel_state == CANCEL_CLAIMED
        if ok:
            rec.cancel_state = state
            if state != CANCEL_IGNORED:
                self.statements_cancelled += 1
        fp_mutex_unlock(&self.mu)
        return ok

    def _watching(self):
        """Records of the statements under a deadline right now (tests, the watcher)."""
        cdef list out = []
        cdef ConnRecord rec
        cdef Py_ssize_t n = 0, i = 0
        fp_mutex_lock(&self.mu)
        rec = self.watch_head
        while rec is not None:
            n += 1
            rec = rec.w_next
        fp_mutex_unlock(&self.mu)
        out = [None] * n
        fp_mutex_lock(&self.mu)
        rec = self.watch_head
        while rec is not None and i < n:
            out[i] = rec
            i += 1
            rec = rec.w_next
        fp_mutex_unlock(&self.mu)
        return out[:i]

    def _set_inline_connect(self, bint inline):
        """A caller that finds room connects in its own thread, as QueuePool and DBUtils do
        (their creators and connect events may rely on the caller's thread-locals); the
        connect is then bounded by the driver, not by the pool's timeout."""
        self.inline_connect = inline

    def _set_reuse_fifo(self, bint fifo):
        """Reuse idle connections oldest first (True) or newest first (False, the default:
        hot connections stay hot, surplus ones reach max_idle_time)."""
        fp_mutex_lock(&self.mu)
        self.fifo_reuse = fifo
        fp_mutex_unlock(&self.mu)

    def _set_statement_timeout(self, timeout):
        self.statement_timeout_ = -1.0 if timeout is None else float(timeout)

    cdef object _run(self, object sql, object params, int mode, int attempt=0):
        # One statement on a pooled connection, given back before returning. A failure that
        # proves the statement never reached the server is retried on another connection:
        # twice on pooled ones, then once on a new one (Go's rule). Anything else propagates
        # unchanged; a connection it broke is closed, never pooled. attempt: how many
        # were made already (fastpool.aio's native route made the first).
        cdef ConnRecord rec
        cdef int kind
        cdef int cancel
        cdef double deadline
        cdef double block = _block_deadline() if _deadlines_used else INFINITY
        while True:
            # A retry checks out again, so a deadline that has passed ends it there.
            rec = self._checkout_within(self.timeout_, attempt >= MAX_BAD_CONN_RETRIES, block)
            deadline = self._stmt_deadline_within(block)
            # The checkout saw the block's deadline ahead (a connection handed over past it
            # ends in DeadlineExceeded), and now + statement_timeout is ahead by definition.
            if deadline != INFINITY and not self._watch_begin(rec, deadline, False):
                self._checkin(rec, False)
                raise self._deadline_error(None, "before the statement was sent")
            try:
                if mode == MODE_STREAM:
                    # The Rows holds rec and its deadline registration from here on.
                    return self._stream(rec, None, sql, params, 0, deadline)
                result = _execute_on(rec.raw, sql, params, mode)
            except BaseException as exc:
                cancel = self._watch_end(rec) if deadline != INFINITY else CANCEL_NONE
                kind = self._error_kind(exc)
                if cancel != CANCEL_NONE:
                    # Cancelled for its deadline: never retried, whatever the error says.
                    self._checkin(rec, kind != ERR_OK or cancel != CANCEL_KILLED)
                    raise self._deadline_error(exc, "while the statement ran; it was cancelled") from exc
                self._checkin(rec, kind != ERR_OK)
                if kind == ERR_RETRY and attempt < MAX_BAD_CONN_RETRIES:
                    attempt += 1
                    continue
                raise
            cancel = self._watch_end(rec) if deadline != INFINITY else CANCEL_NONE
            if _cancel_spoiled(cancel):
                # It finished, but its connection may still be hit by the cancel.
                self._checkin(rec, True)
                return result
            if mode == MODE_EXEC and _is_tx_control(sql):
                # Someone ran BEGIN / SET autocommit through the pool itself: never hand
                # that session state to the next caller.
                try:
                    self._reset(rec.raw)
                except BaseException:
                    self._checkin(rec, True)
                    raise
            self._checkin(rec, False)
            return result

    cdef Rows _stream(self, ConnRecord rec, Conn owner, object sql, object params, int depth,
                      double deadline):
        # The caller registered rec under `deadline` (if finite); on success the Rows owns
        # that registration until its last row, so it keeps the deadline of its block.
        cdef Rows rows = Rows.__new__(Rows)
        cur, rows._direct = self._stream_cursor(rec.raw)
        if params is None:
            cur.execute(sql)
        else:
            cur.execute(sql, params)
        rows._pool = self
        rows._cursor = cur
        rows._description = cur.description
        rows._buf = ()
        rows._batch = STREAM_BATCH
        rows._streaming = True
        rows._open = True
        rows._watched = deadline != INFINITY
        if owner is None:
            rows._rec = rec
            _hold_site(rec, SITE_ROWS, depth)
        else:
            rows._owner = owner
            owner._rows = <PyObject *>rows      # borrowed: see Conn._rows in _core.pxd
        return rows

    # ---- fastpool.aio's native route (_bridge.pyx: statement, checkout) ----------------
    # A task runs a plain statement by awaiting the driver itself, without the bridge:
    # these hand it a connection (an idle one, or after a wait whose steps are _wait's)
    # and settle it, with the same rules as _run. What may do I/O in the pool's own code
    # (a deadline, a check or reset hook) goes through the bridge instead, where _run
    # runs for the task: the state machine stays this one.
    cpdef bint _native_ok(self, object sql, int mode) except -1:
        """Whether a statement may take the native route: no check hook (it may do
        I/O at checkout), no deadline to watch, no transaction control to reset after."""
        if self._check_hook is not None or (mode == MODE_EXEC and _is_tx_control(sql)):
            return False
        return self._stmt_deadline_within(_block_deadline() if _deadlines_used else INFINITY) == INFINITY

    cpdef ConnRecord _take_idle(self):
        """An idle connection (checked as at any checkout), or None at once."""
        cdef ConnRecord rec = self._get(0.0, False, False, True)
        if rec is not None:
            self._checked_out(rec)
        return rec

    cpdef bint _task_may_wait(self) except -1:
        """Whether a task with no idle connection may take checkout(): not when it
        would connect in its own context (timeout=0, "never wait", connects inline),
        which for a task is I/O to await through the bridge."""
        return self.timeout_ != 0 and not self.inline_connect

    cpdef ConnRecord _get_for_task(self, Waiter w, double timeout):
        """A connection for a task that waits natively (w: its waiter, with its parker)
        at most timeout seconds (< 0: forever; the pool's own is timeout_): taken at once,
        or None with w queued; the task then takes the _wait steps (_bridge.checkout)."""
        cdef ConnRecord rec = self._get(timeout, False, False, False, w)
        if rec is not None:
            self._checked_out(rec)
        return rec

    cpdef ConnRecord _wait_end_for(self, Waiter w):
        cdef ConnRecord rec = self._wait_end(w)
        self._checked_out(rec)
        return rec

    cpdef bint _give_back_quiet(self, ConnRecord rec) except -1:
        """Give rec back if that needs no I/O (no reset hook, or the dialect reads it
        clean); False: give it back through the bridge."""
        if self._reset_hook is not None and (
                self._clean_probe is None or self._clean_probe(rec.raw) != self._clean_value):
            return False
        self._checkin(rec, False, True)
        return True

    cpdef bint _statement_failed(self, ConnRecord rec, BaseException exc) except -1:
        """Settle rec after its statement raised exc: pooled, or closed if exc broke it.
        True when the statement never reached the server and may run elsewhere
        (_run_again)."""
        cdef int kind = self._error_kind(exc)
        self._checkin(rec, kind != ERR_OK)
        return kind == ERR_RETRY

    def _checkin_bridged(self, ConnRecord rec):
        """The give-back _give_back_quiet left to the bridge (its reset does I/O)."""
        self._checkin(rec, False)

    def _run_again(self, sql, params, int mode):
        """The statement the native route could not run, from its second attempt."""
        return self._run(sql, params, mode, 1)

    # ---- the API: statements (Go's DB.Exec / QueryRow / Query) ------------------------
    def execute(self, sql, params=None):
        """Run a statement on a pooled connection; return Result(rowcount, lastrowid)."""
        return self._run(sql, params, MODE_EXEC)

    def query_row(self, sql, params=None):
        """The first row of a query (a tuple) or None; the connection is back at once."""
        return self._run(sql, params, MODE_ROW)

    def query(self, sql, params=None, *, bint stream=False):
        """Rows of a query.

        By default the whole result is read and the connection is back before this
        returns. With ``stream=True`` rows come from the server as they are iterated and
        the Rows holds its connection until the last row is read, or until close().
        """
        if stream:
            return self._run(sql, params, MODE_STREAM)
        return _buffered_rows(self._run(sql, params, MODE_ALL))

    cdef Conn _new_conn(self, object timeout):
        # A cdef call pushes no Python frame: the captured site is still the caller's.
        cdef Conn c = Conn.__new__(Conn)
        c._rec = self._checkout(self._timeout_arg(timeout), False)
        c._pool = self
        _hold_site(c._rec, SITE_CONN, 0)
        return c

    def conn(self, timeout=_POOL_DEFAULT):
        """Take a connection (a dedicated ``Conn``); give it back with ``close()`` or ``with``."""
        return self._new_conn(timeout)

    def begin(self, timeout=_POOL_DEFAULT):
        """Start a transaction: a Tx holding one connection until commit() or rollback()."""
        cdef Tx tx = Tx.__new__(Tx)
        cdef ConnRecord rec = self._checkout(self._timeout_arg(timeout), False)
        cdef double deadline = self._stmt_deadline()
        cdef int cancel = CANCEL_NONE
        if deadline != INFINITY and not self._watch_begin(rec, deadline):
            self._checkin(rec, False)
            raise self._deadline_error(None, "before BEGIN was sent")
        try:
            self._begin(rec.raw)
        except BaseException as exc:
            if deadline != INFINITY:
                cancel = self._watch_end(rec)
            self._checkin(rec, self._error_kind(exc) != ERR_OK or cancel != CANCEL_NONE)
            if cancel != CANCEL_NONE:
                raise self._deadline_error(exc, "during BEGIN; it was cancelled") from exc
            raise
        if deadline != INFINITY and _cancel_spoiled(self._watch_end(rec)):
            self._checkin(rec, True)
            raise self._deadline_error(None, "during BEGIN; its connection was closed")
        tx._rec = rec
        tx._pool = self
        tx._in_tx = True
        _hold_site(rec, SITE_TX, 0)
        return tx

    def transaction(self, timeout=_POOL_DEFAULT):
        """``with db.transaction() as tx:`` commits on normal exit, rolls back on exception."""
        return self.begin(timeout)

    def getconn(self, timeout=_POOL_DEFAULT):
        """Take a connection; return it with ``putconn()`` (psycopg_pool's pair)."""
        return self._new_conn(timeout)

    def putconn(self, Conn conn not None):
        """Give back a connection from ``getconn()``.

        Raises FastpoolError if it was already given back or belongs to another pool.
        """
        if conn._pool is not self:
            raise FastpoolError("connection belongs to another pool")
        if conn._rec is None:
            raise FastpoolError("connection was already returned to the pool")
        conn._give_back(False)

    cdef Py_ssize_t _reserve_opens_locked(self):
        # Reserve the connects the deficit asks for, for the opener to take; without an
        # opener (need_open_fn None) nothing is reserved and 0 returned.
        cdef Py_ssize_t n
        if self.need_open_fn is None:
            return 0
        n = self._open_deficit_locked()
        if n > 0:
            self.num_open += n
            self.num_opening += n
            self.pending_opens += n
            self.opens_reserved += n
        return n

    def _take_reserved_opens(self):
        """Background opener: the connects reserved for it by waiters' arrivals (each now
        its to open, or to give up with _open_failed())."""
        cdef Py_ssize_t n
        fp_mutex_lock(&self.mu)
        n = self.opens_reserved
        self.opens_reserved = 0
        fp_mutex_unlock(&self.mu)
        return n

    def _drop_reserved_opens(self):
        """Undo the reservations nobody will take (the opener is gone, or waking it failed)."""
        fp_mutex_lock(&self.mu)
        self.num_open -= self.opens_reserved
        self.num_opening -= self.opens_reserved
        self.pending_opens -= self.opens_reserved
        self.opens_reserved = 0
        fp_mutex_unlock(&self.mu)

    def _reserve_open(self):
        """Background opener: reserve one slot to open a connection for, or return False."""
        cdef bint ok
        fp_mutex_lock(&self.mu)
        ok = self._open_deficit_locked() > 0
        if ok:
            self.num_open += 1
            self.num_opening += 1
            self.pending_opens += 1
        fp_mutex_unlock(&self.mu)
        return ok

    def _opened(self, raw):
        """Background opener: a reserved connection was opened; pool it or hand it over."""
        cdef ConnRecord rec = self._new_record(raw)
        self._last_connect_error = None
        # One critical section: were the connect counted done before the connection is
        # pooled, a second opener thread could see neither (the deficit still open) and
        # open one more than asked for -- seen with the GIL off, min_idle=3 giving 4.
        self._put(rec, False, False, True)

    def _open_failed(self, error=None):
        """Background opener: a reserved connection could not be opened.

        When the pool is starved (waiters, and not one live connection or connect in
        flight that could serve them) the error goes to the oldest waiter, which would otherwise wait out
        its timeout for nothing: the database is down, say so now (Go's
        putConnDBLocked(nil, err)). While connections still circulate (the server refuses
        only extra ones: "Too many connections") waiters keep waiting for those. Returns
        True if a waiter took the error."""
        cdef Waiter w = None
        fp_mutex_lock(&self.mu)
        self.num_open -= 1
        self.num_opening -= 1
        self.pending_opens -= 1
        if error is not None and self.wait_head is not None and self.num_open == 0:
            w = self.wait_head
            self._unlink_locked(w)
            w.outcome = W_ERROR
            w.err = error               # the reference we drop is None's: frees nothing
        fp_mutex_unlock(&self.mu)
        if w is not None:
            self._wake_waiter(w)
            return True
        return False

    def _starving(self):
        """True while callers wait and neither a live connection nor a connect in flight
        could serve them."""
        cdef bint starving
        fp_mutex_lock(&self.mu)
        starving = self.n_waiters > 0 and self.num_open == 0
        fp_mutex_unlock(&self.mu)
        return starving

    def _open_deficit(self):
        cdef Py_ssize_t n
        fp_mutex_lock(&self.mu)
        n = self._open_deficit_locked()
        fp_mutex_unlock(&self.mu)
        return n

    def _set_limits(self, max_open, max_idle, min_idle):
        """Set sizes (validated by the façade); close surplus idle connections at once."""
        cdef Py_ssize_t mo = max_open, mi = -1 if max_idle is None else max_idle
        cdef Py_ssize_t mn = min_idle
        cdef list surplus = []
        cdef Py_ssize_t k
        cdef bint wake
        if mo < 0 or mn < 0:
            raise ValueError("sizes must be >= 0")
        if mo > 0 and (mi < 0 or mi > mo):
            mi = mo          # Go clamps max idle to max open rather than refusing it
        if mo > 0 and mn > mo:
            mn = mo
        if mi >= 0 and mn > mi:
            # Kept warm beyond what may sit idle: the opener would connect and the give-back
            # close, in a loop (a connection storm). Clamped, as max_idle to max_open.
            mn = mi
        fp_mutex_lock(&self.mu)
        self.max_open_ = mo
        self.max_idle_ = mi
        self.min_idle_ = mn
        if mo > 0 and self.min_open_ > mo:
            self.min_open_ = mo
        # Surplus idle: past max_idle, or keeping the pool above a lowered max_open.
        k = self.n_free - mi if mi >= 0 else 0
        if mo > 0 and self.num_open - mo > k:
            k = self.num_open - mo
        self.max_idle_closed += self._take_oldest_idle_locked(k, surplus)
        wake = self._open_deficit_locked() > 0
        fp_mutex_unlock(&self.mu)
        for rec in surplus:
            self._close_rec(rec)
        if wake and self.need_open_fn is not None:
            self.need_open_fn()
        return len(surplus)

    def _set_min_open(self, Py_ssize_t n):
        """Keep at least n connections open, in use or idle (psycopg_pool's min_size;
        min_idle counts idle ones only). Clamped to max_open; the opener makes up a lack."""
        cdef bint wake
        if n < 0:
            raise ValueError("min_open must be >= 0")
        fp_mutex_lock(&self.mu)
        self.min_open_ = n if self.max_open_ <= 0 or n <= self.max_open_ else self.max_open_
        wake = self._open_deficit_locked() > 0
        fp_mutex_unlock(&self.mu)
        if wake and self.need_open_fn is not None:
            self.need_open_fn()

    cdef Py_ssize_t _take_oldest_idle_locked(self, Py_ssize_t k, list out):
        # Move the k oldest idle records (the newest are the warmest) into out, which
        # the caller allocated before locking; appending allocates no GC-tracked object.
        cdef Py_ssize_t i
        if k > self.n_free:
            k = self.n_free
        if k <= 0:
            return 0
        for i in range(k):
            out.append(<object>self.free_conns[i])
            Py_DECREF(<object>self.free_conns[i])
        memmove(self.free_conns, self.free_conns + k, (self.n_free - k) * sizeof(PyObject *))
        self.n_free -= k
        self.num_open -= k
        for rec in out:
            (<ConnRecord>rec).state = REC_CLOSED
        return k

    def _close_idle(self):
        """Close every idle connection now (DBUtils' close(), SQLAlchemy's dispose());
        the pool stays open. Returns how many were closed."""
        cdef list idle = []
        fp_mutex_lock(&self.mu)
        self._take_oldest_idle_locked(self.n_free, idle)
        fp_mutex_unlock(&self.mu)
        for rec in idle:
            self._close_rec(rec)
        return len(idle)

    def _retire_open(self):
        """Reuse no connection open now: the idle ones are closed at once, those in use
        when they come back (a host list's failover: they are all on the old primary,
        and a demoted server keeps taking reads, so nothing else would retire them).
        Returns how many idle ones were closed."""
        fp_mutex_lock(&self.mu)
        self.retired_at = self._now_fine()
        fp_mutex_unlock(&self.mu)
        return self._close_idle()

    # ---- record-level access for the adapters ----------------------------------------
    def _take(self, timeout=_POOL_DEFAULT):
        """Check out a bare ConnRecord (no Conn, no reset policy): for the adapters."""
        return self._checkout(self._timeout_arg(timeout), False)

    def _give(self, ConnRecord rec not None, bint bad=False):
        """Give back a record from _take(); bad closes it instead of pooling it."""
        self._checkin(rec, bad)

    def _tally(self, int slot, long long n=1):
        """Add n to a drop-in's counter `slot` (0 .. 3), under mu: no Python lock."""
        if not 0 <= slot < TALLIES:
            raise IndexError("tally slot out of range")
        fp_mutex_lock(&self.mu)
        self.tallies[slot] += n
        fp_mutex_unlock(&self.mu)

    def _tallies(self):
        """The drop-in counters, read together."""
        cdef long long t[TALLIES]
        fp_mutex_lock(&self.mu)
        memcpy(t, self.tallies, sizeof(t))
        fp_mutex_unlock(&self.mu)
        return tuple([t[i] for i in range(TALLIES)])

    def _lend(self, ConnRecord rec not None, code, int lasti, bint detach):
        """A drop-in lends rec's driver connection out bare (psycopg_pool's getconn(),
        aiomysql's acquire()), taken at `code`/`lasti` (the caller's frame): named as its
        holder. detach: the record lets go of rec.raw until _unlend(), so that a holder
        who drops it lets it die (fastpool/lending.py notices and calls _lost). Returns
        the raw it let go of (None when not detached)."""
        rec.site_kind = SITE_LENT
        rec.site_code = code
        rec.site_lasti = lasti
        if not detach:
            return None
        raw = rec.raw
        rec.raw = None
        return raw

    def _unlend(self, ConnRecord rec not None, raw):
        """The lent connection is back with its holder's give-back: the record holds it again."""
        if rec.raw is None:
            rec.raw = raw

    def _lost(self, ConnRecord rec not None):
        """The connection lent out by _lend() was dropped by its holder, never given back
        (the driver's own finalizer closes it): free its slot, counted as a reclaimed leak
        (not as a broken connection), so that waiters get a new connection instead of
        starving. Returns where it was taken, (code, lasti), for the warning."""
        code, lasti = rec.site_code, rec.site_lasti
        rec.lost = True
        self._count_leak(rec)
        self._checkin(rec, True)
        return code, lasti

    def _set_lifetimes(self, max_lifetime, max_idle_time):
        fp_mutex_lock(&self.mu)
        self.max_lifetime_ = INFINITY if max_lifetime is None else max_lifetime
        self.max_idle_time_ = INFINITY if max_idle_time is None else max_idle_time
        fp_mutex_unlock(&self.mu)

    def _set_timeout(self, timeout):
        self.timeout_ = -1.0 if timeout is None else float(timeout)

    def _collect_expired(self):
        """Cleaner: close idle connections past max_lifetime or max_idle_time.

        Idle-time expiry never takes the pool below min_idle (lifetime expiry does,
        and the opener replaces them). Returns how many were closed.
        """
        cdef list expired = []
        cdef Py_ssize_t i, j = 0, n, keep_floor
        cdef ConnRecord rec
        cdef double now = self._now()
        cdef bint wake
        fp_mutex_lock(&self.mu)
        n = self.n_free
        keep_floor = self.min_idle_
        for i in range(n):
            rec = <ConnRecord>self.free_conns[i]
            if self._expired_locked(rec, now):
                expired.append(rec)
                Py_DECREF(rec)
            elif (now - rec.returned_at >= self.max_idle_time_
                  and n - len(expired) > keep_floor
                  and self.num_open - len(expired) > self.min_open_):
                self.max_idle_time_closed += 1
                expired.append(rec)
                Py_DECREF(rec)
            else:
                self.free_conns[j] = self.free_conns[i]
                j += 1
        self.n_free = j
        self.num_open -= len(expired)
        for rec in expired:
            rec.state = REC_CLOSED
        wake = self._open_deficit_locked() > 0
        fp_mutex_unlock(&self.mu)
        for rec in expired:
            self._close_rec(rec)
        if wake and self.need_open_fn is not None:
            self.need_open_fn()
        return len(expired)

    def _close_core(self):
        """Refuse new checkouts, wake every waiter with PoolClosed, close idle connections.

        Connections in use are closed as they come back.
        """
        cdef list idle = []
        cdef list woken = []
        cdef Py_ssize_t i
        cdef Waiter w
        fp_mutex_lock(&self.mu)
        if not self.closed_:
            self.closed_ = True
            for i in range(self.n_free):
                idle.append(<object>self.free_conns[i])
                Py_DECREF(<object>self.free_conns[i])
            self.num_open -= self.n_free
            self.n_free = 0
            while self.wait_head is not None:
                w = self.wait_head
                self._unlink_locked(w)
                w.outcome = W_CLOSED
                woken.append(w)
        fp_mutex_unlock(&self.mu)
        for w in woken:
            self._wake_waiter(w)
        for rec in idle:
            self._close_rec(rec)

    def _after_fork_in_child(self):
        """Forget every connection inherited from the parent, without closing any.

        Only the forking thread exists in the child, so no lock is taken: a lock some
        parent thread held at fork time would stay held forever; mu is made anew.
        Returns the inherited idle driver connections for the façade to neutralise.
        """
        cdef list inherited = []
        cdef Py_ssize_t i
        cdef ConnRecord rec
        fp_mutex_reinit_after_fork(&self.mu)
        self.fork_gen += 1
        for i in range(self.n_free):
            rec = <ConnRecord>self.free_conns[i]
            rec.state = REC_CLOSED
            self._unlink_all_locked(rec)
            inherited.append(rec.raw)
            Py_DECREF(rec)
        self.n_free = 0
        # Waiters were threads of the parent; they do not exist here.
        self.wait_head = self.wait_tail = None
        self.n_waiters = 0
        self.n_fresh_waiters = 0
        self.n_full_waiters = 0
        self.n_starving = 0
        self.n_deep = 0
        # So were the statements under a deadline: the child's watcher must never cancel
        # (KILL QUERY) a statement of the parent's.
        rec = self.watch_head
        while rec is not None:
            nxt = rec.w_next
            rec.w_next = rec.w_prev = None
            rec.watched = False
            rec = nxt
        self.watch_head = None
        self.watch_at = INFINITY
        self.num_open = self.num_opening = self.pending_opens = self.opens_reserved = 0
        return inherited

    def _counts(self):
        """(max_open, open, in_use, idle, waiting, wait_count, wait_duration,
        max_idle_closed, max_idle_time_closed, max_lifetime_closed, timeouts,
        bad_conns_discarded, leaks_reclaimed, opening, deadlines_exceeded,
        statements_cancelled, waits_refused, connects, connect_errors, connect_time,
        checkins, use_time, discarded) - one consistent snapshot."""
        # Copied into C variables under mu and boxed after: building the tuple allocates an
        # object the collector tracks, which can start a collection, whose finalizers (a
        # dropped Conn's reclaim) take mu: never under mu.
        cdef Py_ssize_t n_max, n_open, n_free, n_wait, n_opening
        cdef unsigned long long c[13]
        cdef unsigned long long c13
        cdef double wait_duration, connect_time, use_time
        fp_mutex_lock(&self.mu)
        n_max, n_open, n_free = self.max_open_, self.num_open, self.n_free
        n_wait, n_opening = self.n_waiters, self.num_opening
        c[0], c[1], c[2] = self.wait_count, self.max_idle_closed, self.max_idle_time_closed
        c[3], c[4], c[5] = self.max_lifetime_closed, self.timeouts, self.bad_conns_discarded
        c[6], c[7], c[8] = self.leaks_reclaimed, self.deadlines_exceeded, self.statements_cancelled
        c[9], c[10], c[11] = self.waits_refused, self.connects, self.connect_errors
        c[12] = self.checkins
        c13 = self.holder_discards
        wait_duration, connect_time, use_time = self.wait_duration, self.connect_time, self.use_time
        fp_mutex_unlock(&self.mu)
        return (n_max, n_open, n_open - n_free - n_opening, n_free, n_wait, c[0], wait_duration,
                c[1], c[2], c[3], c[4], c[5], c[6], n_opening, c[7], c[8], c[9], c[10], c[11],
                connect_time, c[12], use_time, c13)

    def _count_cancelled(self):
        """The façade ended a statement on the server whose caller was cancelled (an
        asyncio task): counted with the deadline cancels in statements_cancelled."""
        fp_mutex_lock(&self.mu)
        self.statements_cancelled += 1
        fp_mutex_unlock(&self.mu)

    def _count_leak(self, ConnRecord rec=None):
        fp_mutex_lock(&self.mu)
        self.leaks_reclaimed += 1
        fp_mutex_unlock(&self.mu)
        if self._event_hook is not None:
            self._event_hook("leak", rec, 0.0, None)

    def _note_connect(self, double seconds, bint ok):
        """The façade: one connect attempt (configure hook included) took `seconds`."""
        fp_mutex_lock(&self.mu)
        if ok:
            self.connects += 1
        else:
            self.connect_errors += 1
        self.connect_time += seconds
        fp_mutex_unlock(&self.mu)

    def _wait_percentiles(self, bint reset=False):
        """(p50, p99, max) of the counted waits, in seconds, since the start or the last
        reset; each percentile is its bin's upper edge (within 25%), never above max.
        reset=True empties the bins after reading them."""
        cdef unsigned long long hist[WAIT_BUCKETS]
        cdef unsigned long long total = 0, seen = 0
        cdef double top
        cdef Py_ssize_t i
        fp_mutex_lock(&self.mu)
        memcpy(hist, self.wait_hist, sizeof(hist))
        top = self.wait_max
        if reset:
            memset(self.wait_hist, 0, sizeof(hist))
            self.wait_max = 0.0
        fp_mutex_unlock(&self.mu)
        for i in range(WAIT_BUCKETS):
            total += hist[i]
        if total == 0:
            return (0.0, 0.0, 0.0)
        out = []
        for q in (0.5, 0.99):
            seen = 0
            for i in range(WAIT_BUCKETS):
                seen += hist[i]
                if seen >= q * total:
                    break
            out.append(min(_bin_upper(i), top))
        return (out[0], out[1], top)

    def _waiters_starving(self):
        """How many queued callers have waited past the barging bound (tests)."""
        cdef Py_ssize_t n
        fp_mutex_lock(&self.mu)
        n = self.n_starving
        fp_mutex_unlock(&self.mu)
        return n

    def _waiters_deep(self):
        """How many queued callers arrived behind a long wait (Waiter.deep), and how many
        idle connections there are, read together (tests: never both above 0)."""
        cdef Py_ssize_t n, idle
        fp_mutex_lock(&self.mu)
        n = self.n_deep
        idle = self.n_free
        fp_mutex_unlock(&self.mu)
        return n, idle

    def _set_handoff_after(self, seconds):
        """The barging bound (HANDOFF_AFTER); 0: hand every give-back to the oldest waiter."""
        cdef double v = max(0.0, float(seconds))
        fp_mutex_lock(&self.mu)
        self.handoff_after_ = v
        fp_mutex_unlock(&self.mu)

    def _set_max_waiting(self, max_waiting):
        cdef Py_ssize_t v = -1 if max_waiting is None else max_waiting
        fp_mutex_lock(&self.mu)
        self.max_waiting_ = v
        fp_mutex_unlock(&self.mu)

    def _set_check_after(self, seconds):
        self.check_after_ = INFINITY if seconds is None else seconds

    def _call_watched(self, ConnRecord rec not None, fn):
        """fn(rec.raw), its statements bounded like the caller's own: under the current
        deadline block and statement_timeout, the watcher cancels what runs past them and
        DeadlineExceeded is raised (the hooks: check, reset)."""
        cdef double deadline = self._stmt_deadline()
        cdef int cancel = CANCEL_NONE
        if deadline == INFINITY:
            return fn(rec.raw)
        if not self._watch_begin(rec, deadline):
            raise self._deadline_error(None, "before a hook could run")
        try:
            result = fn(rec.raw)
        except BaseException as exc:
            cancel = self._watch_end(rec)
            if cancel != CANCEL_NONE:
                raise self._deadline_error(exc, "while a hook ran; it was cancelled") from exc
            raise
        cancel = self._watch_end(rec)
        if cancel != CANCEL_NONE:
            raise self._deadline_error(None, "while a hook ran; it was cancelled")
        return result

    @property
    def closed(self):
        return self.closed_

    def _settings(self):
        """(max_open, max_idle, min_idle, max_lifetime, max_idle_time, timeout,
        statement_timeout) as the core enforces them: None for unlimited / forever."""
        cdef Py_ssize_t mo, mi, mn
        cdef double ml, mit
        fp_mutex_lock(&self.mu)
        mo, mi, mn = self.max_open_, self.max_idle_, self.min_idle_
        ml, mit = self.max_lifetime_, self.max_idle_time_
        fp_mutex_unlock(&self.mu)
        return (mo, None if mi < 0 else mi, mn, None if isinf(ml) else ml,
                None if isinf(mit) else mit, None if self.timeout_ < 0 else self.timeout_,
                None if self.statement_timeout_ < 0 else self.statement_timeout_)

    def _limits(self):
        cdef Py_ssize_t mo, mi, mn
        fp_mutex_lock(&self.mu)
        mo, mi, mn = self.max_open_, self.max_idle_, self.min_idle_
        fp_mutex_unlock(&self.mu)
        return (mo, mi, mn)



cdef int _visit_free_conns(PyObject *o, fp_visitproc visit, void *arg) noexcept:
    # The collector's view of the free list (see fp_chain_traverse). Reads it without mu:
    # the collector runs with every other thread stopped at a point where mu is not held
    # mid-update (nothing under mu lets the GIL go or reaches a safe point).
    #
    # Shown only when an idle connection may refer back to the pool (a SQLAlchemy record
    # does: without this, a dropped engine would be a cycle the collector cannot see).
    # A driver's connection never does, and then the free list stays out of view on
    # purpose: its records count as referenced from outside, so a dropped pool's garbage
    # holds the pool but not its idle connections. The pool's finalizer closes them
    # properly; were they garbage too, the collector would run their drivers' own
    # finalizers in any order, and sqlite3 (3.13) and psycopg warn "unclosed"/"deleted
    # while still open" for a connection the pool was about to close.
    cdef CorePool pool = <CorePool><void *>o
    cdef Py_ssize_t i
    cdef int r
    if not pool._idle_may_refer_back:
        return 0
    for i in range(pool.n_free):
        r = visit(pool.free_conns[i], arg)
        if r != 0:
            return r
    return 0


if fp_chain_traverse(<PyTypeObject *>CorePool, _visit_free_conns) != 0:
    raise ImportError("fastpool._core: the pool type's traverse was chained twice")


# ---- statements on one driver connection ---------------------------------------------
cdef object _execute_on(object raw, object sql, object params, int mode):
    cdef Result r
    cur = raw.cursor()
    try:
        if params is None:
            cur.execute(sql)
        else:
            cur.execute(sql, params)
        if mode == MODE_ROW:
            # fetchone() first: asking for description first costs psycopg a list of
            # Column objects on every call. A statement with no result set returns None
            # (sqlite3, MySQL drivers) or raises (psycopg): None all the same.
            try:
                result = cur.fetchone()
            except Exception:
                if cur.description is not None:
                    raise
                result = None
        elif mode == MODE_EXEC:
            r = Result.__new__(Result)
            r.rowcount = cur.rowcount
            # DB-API makes lastrowid optional: psycopg has none (PostgreSQL: RETURNING).
            r.lastrowid = getattr(cur, "lastrowid", None)
            result = r
        elif cur.description is None:
            result = (None, ())
        else:
            result = (cur.description, cur.fetchall())
    except BaseException:
        # The caller must see its own exception, not one from closing the cursor: after
        # an interrupt, mysqlclient's close() reads the unread result and raises 2014
        # ("commands out of sync"), which would replace a KeyboardInterrupt. Whether the
        # connection is still usable is the pool's decision, from the original error.
        _close_quietly(cur)
        raise
    cur.close()
    return result


cdef double _bin_upper(Py_ssize_t i):
    # The upper edge, in seconds, of bin i of _note_wait_locked.
    if i == 0:
        return 1e-6
    return ldexp(0.5 + ((i - 1) % 4 + 1) / 8.0, <int>((i - 1) // 4 + 1)) * 1e-6


cdef bint _is_tx_control(object sql):
    # Cheap look at the first keyword; only statements run through execute() pay it.
    cdef str head
    if not isinstance(sql, str):
        return False
    head = (<str>sql).lstrip()[:10].upper()
    return head.startswith(_TX_CONTROL)


cdef Rows _buffered_rows(tuple desc_rows):
    cdef Rows rows = Rows.__new__(Rows)
    desc, data = desc_rows
    rows._description = desc
    rows._buf = data if type(data) is tuple or type(data) is list else list(data)
    rows._open = False
    return rows


cdef inline void _hold_site(ConnRecord rec, int kind, int depth):
    # Its holder and where it was opened: the caller's frame `depth` levels above the one
    # calling into the core (a cdef call pushes no frame). Cleared when it is given back.
    rec.site_kind = kind
    rec.site_code = fp_caller_code(depth, &rec.site_lasti)


cdef object _first(tuple t):
    return t[0]


cdef str _holder_text(str who, object code, int lasti):
    if code is None:
        return who
    return f"{who} opened at {_site_text(code, lasti)}"


cdef str _site_text(object code, int lasti):
    cdef int line = fp_code_line(code, lasti)
    if code is None or line < 0:
        return "an unknown place"
    return f"{code.co_filename}:{line}"


cdef _warn_leak(str what, object code, int lasti, str unfinished):
    cdef int line = fp_code_line(code, lasti)
    msg = (f"fastpool: a {what} opened at {_site_text(code, lasti)} was dropped without "
           f"{unfinished}; its connection was reclaimed")
    if code is not None and line >= 0:
        warnings.warn_explicit(msg, ConnectionLeakWarning, code.co_filename, line)
    else:
        warnings.warn(msg, ConnectionLeakWarning, stacklevel=2)


@cython.final
@cython.freelist(64)
cdef class Result:
    """What ``execute()`` returns. Compares equal to another ``Result`` with the same two
    values.

    Attributes:
        rowcount: the driver's ``cursor.rowcount``: rows the statement changed (or
            matched, as the driver counts them); -1 when the driver does not know.
        lastrowid: the driver's ``cursor.lastrowid`` (an auto-increment id after an
            ``INSERT`` on MySQL and SQLite); ``None`` where there is none (PostgreSQL:
            use ``INSERT ... RETURNING id`` with ``query_row``).
    """

    def __repr__(self):
        return f"Result(rowcount={self.rowcount!r}, lastrowid={self.lastrowid!r})"

    def __eq__(self, other):
        if isinstance(other, Result):
            return (self.rowcount, self.lastrowid) == ((<Result>other).rowcount, (<Result>other).lastrowid)
        return NotImplemented

    def __hash__(self):
        return hash((self.rowcount, self.lastrowid))


# No freelist: its reclaim is a finalizer (__del__, below), and CPython marks an object
# finalized in memory that a freelist would hand to the next Conn, which would then never
# be finalized. no_gc_clear: the collector never empties one from under its reclaim.
@cython.no_gc_clear
cdef class Conn:
    """A connection taken from the pool for the caller's exclusive use (Go's sql.Conn).

    Session state (SET @x, temporary tables) survives between calls on it. ``close()``
    (or leaving a ``with`` block) gives it back; closing twice is harmless. A connection
    that raw DB-API access or transaction control went through is rolled back first.
    """

    cdef str _kind(self):
        return "Conn"

    cdef ConnRecord _live(self):
        if self._rec is None:
            raise FastpoolError(f"this {self._kind()} is finished: its connection was returned to the pool")
        if self._rows != NULL:
            raise FastpoolError(
                f"a streaming Rows is still open on this {self._kind()}: read it to the end or close() it")
        return self._rec

    cdef int _end_rows(self) except -1:
        # End its open streaming Rows, unread rows discarded (may mark it broken when they
        # cannot be drained within the pool's budget).
        if self._rows != NULL:
            (<Rows>self._rows)._finish(False)
        return 0

    cdef int _give_back(self, bint bad) except -1:
        cdef ConnRecord rec = self._rec
        if rec is None:
            return 0
        self._end_rows()
        self._rec = None
        bad = bad or self._broken
        if not bad and (self._dirty or self._in_tx):
            try:
                self._pool._reset(rec.raw)
            except Exception:
                bad = True
            except BaseException:
                self._pool._checkin(rec, True)
                raise
        self._dirty = self._in_tx = self._broken = False
        self._pool._checkin(rec, bad)
        return 0

    cdef object _run_here(self, object sql, object params, int mode):
        # One statement on this connection. MODE_STREAM returns a streaming Rows, which
        # keeps the deadline registration (and the connection's result) until its end.
        cdef ConnRecord rec = self._live()
        cdef CorePool pool = self._pool
        cdef double deadline = pool._stmt_deadline()
        cdef int cancel = CANCEL_NONE
        if deadline != INFINITY and not pool._watch_begin(rec, deadline):
            raise pool._deadline_error(None, "before the statement was sent")
        try:
            if mode == MODE_STREAM:
                return pool._stream(rec, self, sql, params, 0, deadline)
            result = _execute_on(rec.raw, sql, params, mode)
        except BaseException as exc:
            if deadline != INFINITY:
                cancel = pool._watch_end(rec)
            if pool._error_kind(exc) != ERR_OK or _cancel_spoiled(cancel):
                self._broken = True
            if cancel != CANCEL_NONE:
                raise pool._deadline_error(exc, "while the statement ran; it was cancelled") from exc
            raise
        if deadline != INFINITY:
            cancel = pool._watch_end(rec)
            if _cancel_spoiled(cancel):
                self._broken = True
        if mode == MODE_EXEC and not self._dirty and _is_tx_control(sql):
            self._dirty = True
        return result

    # -- statements on this connection (no retries: its session state matters) --
    def execute(self, sql, params=None):
        """Run a statement on this connection; return ``Result(rowcount, lastrowid)``.

        Args:
            sql: the statement, in the driver's placeholder style (``%s``, ``?``, ``$1``).
            params: its parameters (a sequence, or a mapping where the driver takes one).

        Unlike the pool's ``execute``, never retried on another connection: the session
        state of this one is what the caller holds it for."""
        return self._run_here(sql, params, MODE_EXEC)

    def query_row(self, sql, params=None):
        """The first row of a query on this connection (a tuple), or ``None``."""
        return self._run_here(sql, params, MODE_ROW)

    def query(self, sql, params=None, *, bint stream=False):
        """The rows of a query on this connection.

        Args:
            sql: the query.
            params: its parameters.
            stream: ``False`` (default) reads the whole result now; ``True`` reads it as
                it is iterated, and the connection runs no other statement until the
                last row is read or the ``Rows`` is closed.

        Returns:
            Rows: an iterator of tuples."""
        if stream:
            return self._run_here(sql, params, MODE_STREAM)
        return _buffered_rows(self._run_here(sql, params, MODE_ALL))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self._give_back(False)
        return False

    def close(self):
        """Give the connection back to the pool (harmless if it is already back)."""
        self._give_back(False)

    def discard(self):
        """Close the driver connection instead of pooling it (it is broken or tainted).
        Counted in ``stats().discarded``, not as a broken connection."""
        if self._rec is not None:
            self._rec.holder_discard = True
        self._give_back(True)

    def __del__(self):
        # Dropped while still holding a connection: the leak that takes Go services down.
        # A finalizer, not __dealloc__: when the last reference goes it runs first thing, and
        # when the Conn is garbage in a reference cycle (a frame kept by a caught exception's
        # traceback) the collector runs every finalizer of that garbage before it clears
        # anything, so the driver connection, its cursor and the pool are still whole here.
        # Giving the connection back makes the record reachable again, which the collector
        # honours: it never clears what a finalizer brought back.
        cdef CorePool pool = self._pool
        if self._rec is None or pool is None:
            return
        if pool._defer_reclaim is not None and pool._defer_reclaim(self._reclaim_now):
            return                      # fastpool.aio: reclaimed by a task on its loop
        self._reclaim()

    cdef int _reclaim(self) except -1:
        # Take the connection back clean (rolled back if need be), count it, say so.
        cdef CorePool pool = self._pool
        if self._rec is None or pool is None:
            return 0
        code, lasti = self._rec.site_code, self._rec.site_lasti
        what = self._kind()
        if self._in_tx:
            self._dirty = True
        pool._count_leak(self._rec)
        try:
            self._give_back(False)
        finally:
            # Counted, so said, even when the rollback was cut short (a greenlet killed).
            _warn_leak(what, code, lasti, "commit() or rollback()" if what == "Tx" else "close()")
        return 0

    @property
    def raw(self):
        """The driver's own connection object (marks it for a rollback when given back)."""
        cdef ConnRecord rec = self._live()
        self._dirty = True
        return rec.raw

    @property
    def closed(self):
        """True once given back (``close()``, ``discard()``, the end of its ``with``)."""
        return self._rec is None

    @property
    def _record(self):
        """Its pool record (None once given back), without marking it dirty as ``raw``
        does: for tests that check no two holders share a connection."""
        return self._rec

    def _set_site(self, code, int lasti):
        """Where it was opened, for the leak warning, when the caller's frame is not the one
        below the core (fastpool.aio runs the core in a greenlet of its own)."""
        if self._rec is not None:
            self._rec.site_code, self._rec.site_lasti = code, lasti

    def _reclaim_now(self):
        """What dropping it does, done now: fastpool.aio's wrapper was dropped, and the
        reclaim's I/O must run where it can be awaited."""
        self._reclaim()

    @property
    def pool(self):
        """The pool it was taken from."""
        return self._pool

    def cursor(self, *args, **kwargs):
        """A plain DB-API cursor on this connection."""
        cdef ConnRecord rec = self._live()
        self._dirty = True
        return rec.raw.cursor(*args, **kwargs)

    def __repr__(self):
        if self._rec is None:
            return f"<fastpool.{self._kind()} finished>"
        return (f"<fastpool.{self._kind()} in use, opened at "
                f"{_site_text(self._rec.site_code, self._rec.site_lasti)}>")


@cython.no_gc_clear
cdef class Tx(Conn):
    """A transaction (Go's sql.Tx). ``with db.transaction() as tx:`` commits on normal exit
    and rolls back on an exception; ``db.begin()`` ... ``tx.commit()`` / ``tx.rollback()``."""

    cdef str _kind(self):
        return "Tx"

    cdef int _end(self, bint commit) except -1:
        cdef ConnRecord rec
        cdef CorePool pool = self._pool
        cdef double deadline
        cdef int cancel = CANCEL_NONE
        if self._rec is not None and self._rows != NULL:
            # A streaming Rows still open on it ends here, its unread rows discarded (as
            # Go's Tx.Commit closes the Tx's open Rows first): a `with db.transaction()`
            # block that returns mid-stream commits, instead of refusing and stranding the
            # connection.
            try:
                self._end_rows()
            except BaseException:
                self._give_back(True)
                raise
            if self._broken:
                # The rest of the result could not be read off: the connection is closed,
                # which rolls the transaction back on the server.
                self._give_back(True)
                if commit:
                    raise FastpoolError("the transaction was rolled back, not committed: its"
                                        " open streaming Rows could not be ended (too many"
                                        " unread rows), so its connection was closed")
                return 0
        rec = self._live()
        deadline = pool._stmt_deadline()
        if deadline != INFINITY and not pool._watch_begin(rec, deadline):
            self._give_back(False)     # still in_tx: rolled back before it is pooled
            raise pool._deadline_error(None, "before COMMIT was sent" if commit else "before ROLLBACK was sent")
        try:
            if commit:
                rec.raw.commit()
            else:
                rec.raw.rollback()
        except BaseException as exc:
            if deadline != INFINITY:
                cancel = pool._watch_end(rec)
            if pool._error_kind(exc) != ERR_OK or _cancel_spoiled(cancel):
                self._broken = True
            self._give_back(False)     # still in_tx: rolled back before it is pooled
            if cancel != CANCEL_NONE:
                # A COMMIT cut short may or may not have happened (as in Go).
                raise pool._deadline_error(exc, "during COMMIT; it was cancelled" if commit
                                           else "during ROLLBACK; it was cancelled") from exc
            raise
        if deadline != INFINITY:
            cancel = pool._watch_end(rec)
            if _cancel_spoiled(cancel):
                self._broken = True
        self._in_tx = False
        self._give_back(False)
        return 0

    def commit(self):
        """Commit, and give the connection back (an open streaming ``Rows`` on it is
        ended first, its unread rows discarded, as Go's ``Tx.Commit`` does)."""
        self._end(True)

    def rollback(self):
        """Roll back, and give the connection back."""
        self._end(False)

    def __exit__(self, exc_type, exc, tb):
        if self._rec is None:
            return False                # committed or rolled back inside the block
        if exc_type is None:
            self.commit()
        else:
            try:
                self.rollback()
            except Exception:
                pass                    # the block's own exception is the one to see
        return False

    def close(self):
        """Roll back if still open, and give the connection back."""
        if self._rec is not None:
            self.rollback()

    @property
    def done(self):
        """True once committed or rolled back."""
        return self._rec is None


# No freelist and no_gc_clear, for the reasons given at Conn.
@cython.no_gc_clear
cdef class Rows:
    """An iterator of rows (tuples), with ``columns``, ``fetchone``, ``fetchmany``,
    ``fetchall`` and ``close``. A streaming Rows gives its connection back the moment the
    rows run out (checked here, in compiled __next__), on close(), or when dropped."""

    def __cinit__(self):
        self._buf = ()   # __next__ indexes it in C: never let it be None

    def __iter__(self):
        return self

    def __next__(self):
        cdef object row
        if self._direct:
            # The driver's cursor iterates in C (sqlite3): step it per row, no batches.
            if not self._open:
                raise StopIteration
            try:
                return next(self._cursor)
            except StopIteration:
                self._finish(True)
                raise
            except BaseException as exc:
                err = self._fail(exc)
                if err is not exc:
                    raise err from exc
                raise
        while True:
            if self._i < PySequence_Fast_GET_SIZE(self._buf):
                row = <object>PySequence_Fast_GET_ITEM(self._buf, self._i)
                self._i += 1
                return row
            if not self._open:
                raise StopIteration
            self._fill()

    cdef object _fail(self, BaseException exc):
        # Reading failed: end the Rows; the connection goes back, closed if it broke.
        # Returns the exception to raise: exc, or DeadlineExceeded if the watcher cancelled
        # the statement for its deadline.
        cdef CorePool pool = self._pool
        cdef bint broken = pool._error_kind(exc) != ERR_OK
        cdef int cancel = CANCEL_NONE
        cdef object err = exc
        if self._watched and (self._rec is not None or self._owner is not None):
            self._watched = False
            cancel = pool._watch_end(self._rec if self._rec is not None else self._owner._rec)
            if cancel != CANCEL_NONE:
                broken = broken or cancel != CANCEL_KILLED
                err = pool._deadline_error(exc, "while reading rows; the statement was cancelled")
        self._buf = ()
        self._i = 0
        self._open = False
        if self._owner is not None:
            if broken:
                self._owner._broken = True
            self._owner._rows = NULL
            self._owner = None
        elif self._rec is not None:
            rec, self._rec = self._rec, None
            pool._checkin(rec, True if broken else not _close_quietly(self._cursor))
        self._cursor = None
        return err

    cdef int _fill(self) except -1:
        try:
            batch = self._cursor.fetchmany(self._batch)
        except BaseException as exc:
            err = self._fail(exc)
            if err is not exc:
                raise err from exc
            raise
        self._i = 0
        if not batch:
            self._buf = ()
            self._finish(True)
        else:
            self._buf = batch if type(batch) is tuple or type(batch) is list else list(batch)
        return 0

    cdef int _finish(self, bint clean) except -1:
        # Close the cursor and hand the connection back (to the pool, or to its Conn).
        # Unread rows are drained up to the pool's budget; past it the connection is
        # closed instead (reading a million rows to save one connect is no bargain).
        cdef bint bad = False
        cdef ConnRecord rec = self._rec
        cdef Conn owner = self._owner
        cdef int cancel
        cur = self._cursor
        self._open = False
        self._cursor = None
        self._rec = None
        self._owner = None
        cdef object interrupt = None
        if cur is not None:
            if not clean:
                try:
                    bad = not self._pool._drain(cur, self._pool._drain_budget)
                except Exception:
                    bad = True
                except BaseException as exc:
                    # Interrupted while reading off the rest: the connection is
                    # mid-result. Settle it (closed, never pooled), then re-raise.
                    bad = True
                    interrupt = exc
            if not bad:
                bad = not _close_quietly(cur)
        if self._watched:
            # The statement is over (read to the end, or drained): leave the watch.
            self._watched = False
            cancel = self._pool._watch_end(rec if rec is not None else owner._rec)
            if _cancel_spoiled(cancel):
                bad = True
        if owner is not None:
            owner._rows = NULL
            if bad:
                owner._broken = True
        elif rec is not None:
            self._pool._checkin(rec, bad)
        if interrupt is not None:
            raise interrupt
        return 0

    cdef int _reclaim(self) except -1:
        code, lasti = self._rec.site_code, self._rec.site_lasti
        self._pool._count_leak(self._rec)
        try:
            self._finish(False)
        finally:
            # Counted, so said, even when reading off the rest was cut short.
            _warn_leak("streaming Rows", code, lasti, "being read to the end or close()")
        return 0

    def __del__(self):
        # See Conn.__del__: a finalizer, so a Rows in a reference cycle is reclaimed whole.
        cdef CorePool pool = self._pool
        if self._rec is None and self._owner is None:
            return
        if pool._defer_reclaim is not None and pool._defer_reclaim(self._reclaim_now):
            return                      # fastpool.aio: ended by a task on its loop
        self._reclaim_now()

    def __dealloc__(self):
        # The finalizer ended it; should it not have (it raised midway), the Conn must not
        # keep a pointer to freed memory.
        if self._owner is not None and self._owner._rows == <PyObject *>self:
            self._owner._rows = NULL

    def close(self):
        """Stop reading: discard unread rows and give the connection back (idempotent)."""
        self._buf = ()
        self._i = 0
        if self._open or self._rec is not None or self._owner is not None:
            self._finish(False)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    def fetchone(self):
        """The next row, or ``None`` after the last."""
        try:
            return next(self)
        except StopIteration:
            return None

    def fetchmany(self, Py_ssize_t size=1):
        """Up to ``size`` more rows, as a list (empty after the last)."""
        cdef list out = []
        for row in self:
            out.append(row)
            if len(out) >= size:
                break
        return out

    def fetchall(self):
        """The remaining rows, as a list."""
        return list(self)

    @property
    def columns(self):
        """The column names, as a tuple of str (empty for a statement with no result)."""
        if self._columns is None:
            self._columns = tuple(d[0] for d in self._description) if self._description else ()
        return self._columns

    @property
    def description(self):
        """The driver's DB-API cursor.description."""
        return self._description

    def _set_site(self, code, int lasti):
        """Where it was opened (see Conn._set_site)."""
        if self._rec is not None:
            self._rec.site_code, self._rec.site_lasti = code, lasti

    def _reclaim_now(self):
        """Reclaim it now as if dropped (see Conn._reclaim_now)."""
        if self._rec is not None:
            self._reclaim()
        elif self._owner is not None:
            self._finish(False)     # its Conn keeps the connection; just end the result

    @property
    def holds_result(self):
        """True while a streaming result is unfinished: its connection (or its Conn's) is
        still busy with it."""
        return self._rec is not None or self._owner is not None

    @property
    def holds_connection(self):
        """True while this Rows still holds its connection (streaming, not finished)."""
        return self._rec is not None

    def __repr__(self):
        state = "streaming" if self._open else "buffered" if not self._streaming else "finished"
        return f"<fastpool.Rows {state} columns={self.columns!r}>"


def fd_dead(long long fd):
    """True if an idle connection's socket shows the server closed it (zero-timeout poll)."""
    return bool(fp_fd_dead(fd))


cdef bint _close_quietly(object cursor):
    try:
        cursor.close()
        return True
    except Exception:
        return False
