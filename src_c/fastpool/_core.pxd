# Declarations of fastpool's compiled core; the implementation is in _core.pyx.
from cpython.pythread cimport PyThread_type_lock
from cpython.object cimport PyTypeObject
from cpython.ref cimport PyObject

cdef extern from "fp_sys.h":
    ctypedef struct fp_mutex:
        pass
    int fp_mutex_init(fp_mutex *m)
    void fp_mutex_free(fp_mutex *m)
    void fp_mutex_lock(fp_mutex *m)
    void fp_mutex_unlock(fp_mutex *m) nogil
    void fp_mutex_lock_detached(fp_mutex *m) nogil
    int fp_mutex_reinit_after_fork(fp_mutex *m)
    double fp_now() nogil
    double fp_now_coarse() nogil
    int fp_fd_dead(long long fd) nogil
    int fp_lock_acquire_timed(PyThread_type_lock lock, long long us, int intr) nogil
    long long FP_TIMEOUT_MAX_US
    object fp_caller_code(int depth, int *lasti)
    int fp_code_line(object code, int lasti)
    ctypedef int (*fp_visitproc)(PyObject *, void *) noexcept
    ctypedef int (*fp_extra_traverse)(PyObject *, fp_visitproc, void *) noexcept
    int fp_chain_traverse(PyTypeObject *t, fp_extra_traverse extra)


# Buckets of the wait-time histogram: 4 per power of two of microseconds, up to 1e9 s.
cdef enum:
    WAIT_BUCKETS = 208

# Counters a drop-in keeps on its hot path (psycopg_pool's requests_num, usage_ms), in the
# core so that counting takes no Python lock.
cdef enum:
    TALLIES = 4


cdef enum:
    # What a Waiter was given.
    W_PENDING = 0
    W_GOT = 1
    W_CLOSED = 2
    W_TIMEOUT = 3
    W_ERROR = 4      # handed the error of a connect that failed (Go's putConnDBLocked(nil, err))
    W_RETRY = 5      # woke to find an idle connection: back to _get to take it (or queue again)


cdef enum:
    # What a waiter does after a sleep (CorePool._wait_step).
    WS_DONE = 0      # its outcome is settled: _wait_end
    WS_AGAIN = 1     # sleep again
    WS_RETRY = 2     # an idle connection it may take: back to _get


cdef enum:
    # What a statement's result is turned into.
    MODE_EXEC = 0      # Result(rowcount, lastrowid)
    MODE_ROW = 1       # the first row or None
    MODE_ALL = 2       # (description, all rows)
    MODE_STREAM = 3    # a streaming Rows that keeps the connection


cdef enum RecState:
    REC_IDLE = 0
    REC_IN_USE = 1
    REC_CLOSED = 2


cdef class ConnRecord:
    """One pooled driver connection, wrapped once when it is opened."""
    cdef readonly object raw
    cdef void *owner                  # the CorePool it belongs to (identity only, no reference)
    cdef readonly double created_at
    cdef readonly double returned_at
    cdef double lifetime_factor       # 0.9..1.0: this connection's share of max_lifetime (jitter)
    cdef readonly long long fd        # socket to poll for liveness, -1 if the driver has none
    cdef RecState state
    cdef unsigned long fork_gen
    cdef readonly unsigned long long uses
    cdef readonly double taken_at     # when its holder took it (coarse clock): use_time
    cdef readonly double waited       # seconds its latest checkout waited (0: it was idle)
    cdef public object info           # free for the façade (e.g. who holds it)
    cdef public object lend_ref       # fastpool/lending.py: the weak reference that sees a lent connection dropped
    # A statement on it under a deadline (fastpool.deadline / statement_timeout): linked
    # into its pool's list of watched statements, protected by the pool's mu.
    cdef readonly bint watched
    cdef readonly double stmt_deadline
    cdef readonly int cancel_state    # CANCEL_* in _core.pyx
    cdef ConnRecord w_next
    cdef ConnRecord w_prev
    # Every open record of a pool, in a list its pool's mu protects (linked when the
    # record is made, unlinked when it is closed): what a PoolTimeout names as holders.
    # The next link owns a reference, the previous one is borrowed (no cycle).
    cdef ConnRecord a_next
    cdef PyObject *a_prev
    cdef bint a_linked
    # Who holds it (set by the Conn / Tx / streaming Rows that took it, cleared at
    # give-back; a plain statement leaves it empty): its kind and where it was opened.
    cdef bint holder_discard          # its holder asked for it to be closed (Conn.discard())
    cdef bint lost                    # lent out bare and dropped by its holder: raw is gone
    cdef int site_kind                # SITE_* in _core.pyx
    cdef object site_code
    cdef int site_lasti


cdef class Waiter:
    """A caller queued for a connection. How it sleeps is the one thing that differs
    between a thread and a greenlet: a thread sleeps on its own C lock with the GIL
    released; under gevent or eventlet (CorePool._new_parker) it sleeps on a parker, a
    cooperative lock from the monkey-patched _thread module, so the hub runs meanwhile."""
    cdef PyThread_type_lock sem
    cdef object parker                # None: sleep on sem; else .acquire(True, s) / .release()
    cdef Waiter next
    cdef Waiter prev
    cdef ConnRecord rec
    cdef int outcome
    cdef bint queued
    cdef bint fresh                   # wants a new connection, not an idle one (last retry)
    cdef bint counted                 # waits because the pool is full (wait_count/duration, max_waiting)
    cdef bint by_deadline             # its timeout is a deadline block's: ends in DeadlineExceeded
    cdef bint starving                # has waited handoff_after: give-backs go to waiters now
    cdef bint requeued                # woke to try the free list and lost: queues at the head
    cdef bint in_count                # counted in wait_count (once, however often it queues)
    cdef object err                   # a connect error handed to it (outcome W_ERROR)
    # Its wait (CorePool._wait_init .. _wait_end), kept here so that a task can take the
    # steps between its awaits.
    cdef double t0                    # when it began to wait
    cdef double timeout_
    cdef double deadline_
    cdef double starve_at
    cdef bint timer                   # the current sleep ends at starve_at
    cdef bint deep                    # queued behind a long wait: hand-offs only (_get)
    cdef bint late                    # handed a connection after its time was up
    cdef int _make_sem(self) except -1


cdef class CorePool:
    cdef fp_mutex mu
    # --- mu protects the following fields -------------------------------------------
    cdef PyObject **free_conns        # idle records, owned references; oldest at [0], newest at [n_free-1]
    cdef Py_ssize_t n_free
    cdef Py_ssize_t cap_free
    cdef Waiter wait_head             # FIFO: served from the head, queued at the tail
    cdef Waiter wait_tail
    cdef Py_ssize_t n_waiters
    cdef Py_ssize_t n_fresh_waiters   # of n_waiters: those that want a new connection
    cdef Py_ssize_t n_full_waiters    # of n_waiters: those that wait because the pool is full
    cdef Py_ssize_t max_waiting_      # most full-pool waiters queued at once; < 0: unlimited
    cdef Py_ssize_t n_starving        # of n_waiters: those that have waited handoff_after
    cdef Py_ssize_t n_deep            # of n_waiters: those queued behind a long wait (Waiter.deep)
    cdef double handoff_after_        # the barging bound (seconds); 0: strict hand-off
    cdef Py_ssize_t num_open          # open + being opened; never above max_open
    cdef Py_ssize_t num_opening
    cdef Py_ssize_t pending_opens     # of num_opening: the background opener's
    cdef Py_ssize_t opens_reserved    # of pending_opens: reserved by a waiter's arrival, not yet taken by the opener
    cdef Py_ssize_t max_open_         # <= 0: unlimited
    cdef Py_ssize_t max_idle_         # < 0: unlimited
    cdef Py_ssize_t min_idle_
    cdef Py_ssize_t min_open_         # connections kept open, in use or idle (psycopg_pool's min_size)
    cdef double max_lifetime_         # INFINITY: forever
    cdef double max_idle_time_        # INFINITY: forever
    cdef double retired_at            # connections made at or before it are not reused (-INFINITY: none)
    cdef bint closed_
    cdef bint fifo_reuse              # reuse the oldest idle connection (QueuePool's default)
    cdef bint inline_connect          # a caller with room connects in its own thread (adapters)
    cdef unsigned long fork_gen
    cdef unsigned long long wait_count
    cdef double wait_duration
    cdef unsigned long long max_idle_closed
    cdef unsigned long long max_idle_time_closed
    cdef unsigned long long max_lifetime_closed
    cdef unsigned long long bad_conns_discarded
    cdef unsigned long long holder_discards    # closed at their holder's request (Conn.discard())
    cdef unsigned long long timeouts
    cdef unsigned long long leaks_reclaimed
    cdef unsigned long long deadlines_exceeded
    cdef unsigned long long statements_cancelled
    cdef unsigned long long waits_refused      # TooManyWaiting (max_waiting)
    cdef unsigned long long connects           # physical connections opened
    cdef unsigned long long connect_errors
    cdef double connect_time                   # seconds, over every attempt
    cdef unsigned long long checkins           # connections given back by their holders
    cdef double use_time                       # seconds held, summed over those
    cdef long long tallies[TALLIES]            # a drop-in's own counters (_tally)
    cdef unsigned long long wait_hist[WAIT_BUCKETS]   # counted waits, log-bucketed
    cdef double wait_max                       # the longest of them
    cdef ConnRecord watch_head        # statements under a deadline, in no order
    cdef ConnRecord all_head          # every open record (ConnRecord.a_next)
    cdef double watch_at              # when the watcher will look next; INFINITY: idle
    # --- end of fields protected by mu ------------------------------------------------
    cdef double timeout_              # default wait for conn()/getconn(); < 0: forever
    cdef double statement_timeout_    # ceiling for each statement; < 0: none
    cdef double check_after_          # idle seconds before _check_hook runs at checkout
    cdef object connect_fn            # () -> raw driver connection
    cdef object close_fn              # (raw) -> None, must not raise
    cdef object fileno_fn             # (raw) -> int, -1 when unknown
    cdef object need_open_fn          # () -> None: wake the background opener
    cdef object clock                 # None: the C monotonic clock; else a callable (tests)
    cdef public object _new_parker    # () -> a cooperative parker, or None to sleep in C (fastpool/green.py)
    # Whether the cycle collector is shown the free list (_visit_free_conns): only where
    # an idle connection may refer back to the pool (SQLAlchemy's connection records do).
    cdef public bint _idle_may_refer_back
    cdef public object _last_connect_error  # the opener's latest failure, chained to PoolTimeout
    cdef public object _after_wait_hook   # tests: runs after a wait timed out, before it is settled
    # Policy hooks the façade sets (driver dialect); called outside mu, never per row.
    cdef public object _stream_cursor     # (raw) -> (an unbuffered cursor, iterates in C?)
    cdef public object _classify          # (exc) -> ERR_OK / ERR_BROKEN / ERR_RETRY
    cdef public object _reset             # (raw) -> None: roll back, restore autocommit
    cdef public object _drain             # (cursor, budget) -> True if the result is now consumed
    cdef public object _begin             # (raw) -> None
    cdef public object _holder_hook       # (rec, taken) -> None, only while leak_timeout is set
    cdef public Py_ssize_t _drain_budget  # rows read to clean a dropped stream before closing instead
    # Deadlines (fastpool/deadlines.py): the watcher, started on first use.
    cdef public object _wake_watcher      # () -> None: a statement's deadline is the earliest
    cdef public object _await_cancel      # (rec) -> None: wait until a claimed cancel is settled
    # Operators' hooks and events (fastpool/hooks.py); None costs one test each.
    cdef public object _dead_hook         # (raw) -> bool, at checkout when there is no socket to poll
    cdef public object _check_hook        # (rec) -> bool, at checkout of a connection idle >= check_after_
    cdef public object _reset_hook        # (rec) -> bool, at give-back of a good connection
    # Before _reset_hook: a getter in C (operator.attrgetter) whose result equals
    # _clean_value when the connection needs nothing (PostgreSQL: libpq's transaction
    # status idle); then the Python hook is not called at all. None: always call it.
    cdef public object _clean_probe
    cdef public object _clean_value
    cdef public object _event_hook        # (name, rec or None, seconds, reason): discard/timeout/leak
    # fastpool.aio: (reclaim) -> True when a dropped Conn / Tx / Rows is to be reclaimed
    # later on the event loop (its I/O must be awaited there); None: reclaimed at once.
    cdef public object _defer_reclaim
    # () -> None, at sampled checkouts (the façade: a thread pool used on a running event loop)
    cdef public object _probe_hook

    cdef Py_ssize_t _take_oldest_idle_locked(self, Py_ssize_t k, list out)
    cdef ConnRecord _checkout(self, double timeout, bint fresh)
    cdef int _checked_out(self, ConnRecord rec) except -1
    cdef Conn _new_conn(self, object timeout)
    cdef int _checkin(self, ConnRecord rec, bint bad, bint probed_clean=*) except -1
    cdef object _run(self, object sql, object params, int mode, int attempt=*)
    cpdef bint _native_ok(self, object sql, int mode) except -1
    cpdef ConnRecord _take_idle(self)
    cpdef bint _give_back_quiet(self, ConnRecord rec) except -1
    cpdef bint _statement_failed(self, ConnRecord rec, BaseException exc) except -1
    cdef Rows _stream(self, ConnRecord rec, Conn owner, object sql, object params, int depth,
                      double deadline)
    cdef int _error_kind(self, BaseException exc) except -1
    cdef ConnRecord _get_within(self, double timeout, bint fresh, double block)
    cdef ConnRecord _checkout_within(self, double timeout, bint fresh, double block)
    cdef inline double _stmt_deadline(self)
    cdef inline double _stmt_deadline_within(self, double block)
    cdef int _watch_begin(self, ConnRecord rec, double deadline, bint check=*) except -1
    cdef int _watch_end(self, ConnRecord rec) except -1
    cdef object _deadline_error(self, object cause, str during, bint statement=*)

    cdef inline double _now(self)
    cdef inline double _now_fine(self)
    cdef int _push_free_locked(self, ConnRecord rec)
    cdef bint _expired_locked(self, ConnRecord rec, double now)
    cdef void _enqueue_locked(self, Waiter w)
    cdef int _wake_waiter(self, Waiter w) except -1
    cdef int _sleep(self, Waiter w, double seconds) except -2
    cdef void _unlink_locked(self, Waiter w)
    cdef Py_ssize_t _open_deficit_locked(self) noexcept nogil
    cdef bint _starve_detached(self, Waiter w) noexcept nogil
    cdef Py_ssize_t _reserve_opens_locked(self)
    cdef ConnRecord _new_record(self, object raw)
    cdef ConnRecord _open_new(self)
    cdef ConnRecord _get(self, double timeout, bint fresh=*, bint by_deadline=*, bint idle_only=*,
                         Waiter given=*)
    cdef ConnRecord _wait(self, Waiter w, double timeout, double t0)
    cdef void _wait_init(self, Waiter w, double timeout, double t0)
    cdef double _wait_seconds(self, Waiter w)
    cdef int _wait_step(self, Waiter w, int r) except -1
    cdef Waiter _first_plain_waiter_locked(self)
    cdef ConnRecord _take_free_locked(self, double now, bint *expired)
    cdef ConnRecord _wait_end(self, Waiter w)
    cpdef bint _task_may_wait(self) except -1
    cpdef ConnRecord _get_for_task(self, Waiter w, double timeout)
    cpdef ConnRecord _wait_end_for(self, Waiter w)
    cdef object _timeout_error(self, double waited, bint by_deadline=*)
    cdef int _put(self, ConnRecord rec, bint bad, bint held, bint opened=*) except -1
    cdef int _discard_dead(self, ConnRecord rec, str reason) except -1
    cdef void _note_wait_locked(self, double waited)
    cdef int _close_rec(self, ConnRecord rec) except -1
    cdef void _unlink_all_locked(self, ConnRecord rec)
    cdef list _holders(self, Py_ssize_t most)
    cdef double _timeout_arg(self, object timeout) except? -2.0


cdef class Result:
    # What execute() returns: the driver's rowcount and lastrowid (documented in the .pyx).
    cdef readonly object rowcount
    cdef readonly object lastrowid


cdef class Conn:
    """A checked-out connection (Go's sql.Conn); gives it back on close() / with-exit."""
    cdef CorePool _pool
    cdef ConnRecord _rec              # where it was opened is on its record (site_code)
    cdef bint _dirty                  # raw access or transaction control went through it
    cdef bint _broken                 # a statement on it failed in a way that broke it
    cdef bint _in_tx
    # Its streaming Rows still open, if any: a borrowed pointer, not a reference. The Rows
    # holds its Conn (it reads from the Conn's connection), and a reference back would make
    # a cycle that only the collector could end. The Rows clears it when it finishes, and
    # it always finishes before it is freed.
    cdef PyObject *_rows
    cdef int _give_back(self, bint bad) except -1
    cdef int _end_rows(self) except -1
    cdef int _reclaim(self) except -1
    cdef ConnRecord _live(self)
    cdef object _run_here(self, object sql, object params, int mode)
    cdef str _kind(self)


cdef class Tx(Conn):
    """A transaction (Go's sql.Tx): holds one connection until commit() or rollback()."""
    cdef int _end(self, bint commit) except -1


cdef class Rows:
    """Rows of a query. Buffered: read already, the connection is back. Streaming: holds
    its connection (or its Conn's) until the last row is read or close()."""
    cdef CorePool _pool
    cdef ConnRecord _rec              # held (streaming, pool-owned) until the end; else None
    cdef Conn _owner                  # streaming on a Conn/Tx: the connection stays with it
    cdef object _cursor
    cdef object _buf                  # a list or a tuple, indexed in C without a copy
    cdef Py_ssize_t _i
    cdef object _description
    cdef object _columns
    cdef Py_ssize_t _batch
    cdef bint _streaming
    cdef bint _direct                 # the cursor iterates in C: step it per row
    cdef bint _open                   # more rows may come from the cursor
    cdef bint _watched                # its statement is registered under a deadline
    cdef int _fill(self) except -1
    cdef object _fail(self, BaseException exc)
    cdef int _finish(self, bint clean) except -1
    cdef int _reclaim(self) except -1
