# asyncpg's hot paths: fastpool.asyncpg's (fastpool/asyncpg.py, the drop-in for asyncpg's
# pool) pool-level statement -- pool.fetchval(...), fetch, fetchrow, execute, ... -- on an
# idle connection, and the checks that a connection may go back as it is, the drop-in's
# and fastpool.aio's (the asyncpg dialect's clean probe).
#
# Compiled because it runs on every statement, around a driver call that costs about 100,000
# instructions: the same steps in Python (a coroutine forwarding *args and **kwargs, a
# dozen attribute reads for the clean check, the verdict cache) cost about 17,000 more
# (python -m bench.instructions aio_select1_fastpool_asyncpg_dropin).
#
# asyncpg itself is not imported here: the connection's fields are read by name, as the
# Python module reads them (asyncpg 0.32's Connection and its compiled protocol).

cimport cython

from fastpool._core cimport ConnRecord, CorePool

from asyncio.events import _get_running_loop

from .dialects.pooler import session_state_reason

# Whether a statement's text leaves session state behind, by text: services run a few
# hundred distinct statements, so the classifier's regular expressions run once per text.
cdef dict _verdicts = {}
cdef Py_ssize_t VERDICTS_MAX = 4096


cpdef bint keeps_session_state(object sql) except -1:
    """Whether sql leaves state in the server session that a pooled connection must not
    carry to its next holder (SET, set_config, LISTEN, temporary tables, PREPARE, cursors
    WITH HOLD, advisory locks -- the pooler classifier's verdict -- or several statements
    in one string, which the classifier cannot see into)."""
    verdict = _verdicts.get(sql)
    if verdict is None:
        text = sql if isinstance(sql, str) else str(sql)
        verdict = (session_state_reason(text) is not None or ";" in text.strip().rstrip(";")
                   or "set_config" in text.lower())
        if len(_verdicts) >= VERDICTS_MAX:
            _verdicts.clear()
        _verdicts[sql] = verdict
    return verdict is True


cpdef bint is_clean(object pool, object con, bint dirty) except -1:
    """Whether con (an asyncpg Connection of pool) may go back as it is: nothing to roll
    back, reset or wait for, and below max_queries."""
    protocol = con._protocol  # None once aborted
    return (protocol is not None and not dirty and pool._reset is None
            and not protocol.is_in_transaction() and con._top_xact is None
            and not protocol._is_cancelling() and not con._listeners
            and not con._stmt_exclusive_section._acquired
            and protocol.queries_count < pool._max_queries
            and not con._aborted and protocol.is_connected())


cpdef bint face_clean(object raw) except -1:
    """fastpool.aio's clean probe for asyncpg (AsyncpgDialect.clean_probe): whether the
    connection behind raw (a SyncConnection around an AsyncpgFace) is connected with no
    transaction open, read from asyncpg's protocol without a round trip."""
    protocol = raw.driver_connection.conn._protocol  # None once aborted
    return protocol is not None and protocol.is_connected() and not protocol.is_in_transaction()


cpdef ConnRecord take_idle(object pool):
    """An idle connection's record for the calling task, at once, or None (none idle, or
    the pool is being used from another loop than its own: pool._take sorts that out).
    One made before expire_connections() is closed, not handed out."""
    cdef CorePool sync = pool._sync
    cdef ConnRecord rec
    aio = pool._aio
    # TaskPool._native_now(), read here in C: a Python call per statement is what this
    # module saves.
    if aio._loop is not _get_running_loop() or aio._reclaims:
        return None
    while True:
        rec = sync._take_idle()
        if rec is None or rec.created_at > pool._expired_at:  # the clock: time.monotonic()
            return rec
        sync._checkin(rec, True)  # made before expire_connections(): replace it


async def pooled_call(object pool, str method, object query, tuple args, dict kwargs):
    """Connection.<method>(query, *args, **kwargs) on a pooled connection, for the pool's
    own statement methods. The connection is neither lent nor wrapped: this coroutine
    holds it, and settles it (release()'s rules) however the statement ends. An idle one
    is taken without suspending (take_idle); none idle, the task waits in the core's queue
    (pool._take).
    With a setup callback, or while the pool is not open, the statement goes through
    acquire() (pool._run_acquired), as asyncpg's does."""
    cdef CorePool sync = pool._sync
    cdef ConnRecord rec
    if pool._setup is not None or pool._closing or not pool._initialized or pool._closed:
        return await pool._run_acquired(method, query, args, kwargs)
    rec = take_idle(pool)
    if rec is None:
        rec = await pool._take(None)
    con = rec.raw.driver_connection
    try:
        result = await getattr(con, method)(query, *args, **kwargs)
    except BaseException:
        await pool._settle_taken(rec, con, keeps_session_state(query))
        raise
    dirty = keeps_session_state(query)
    if is_clean(pool, con, dirty):
        sync._checkin(rec, False)
    else:
        await pool._settle_taken(rec, con, dirty)
    return result
