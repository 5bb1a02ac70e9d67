"""A pool over a host list: the primary's pool, and ``db.replicas`` for reads.

The pool is a ``fastpool.Pool`` whose connect picks the host (``HostSet.pick``): every
connection it makes goes to a host of its target, and the core, free list and waiters
are the ones every pool has. What a host list adds is at the edges:

* connect: pick a host of the target (waiting within ``timeout`` while there is none),
  connect there, read the server's role (PostgreSQL reports it at connect) and refuse a
  connection on a server of the wrong role;
* a statement's error: a write refused because the server is read-only, or a session ended
  by a server shutting down, proves the statement did not run: the core runs a pool-level
  statement again, on a new connection, which goes to the new primary. Such an error, and
  any that broke a connection, has the host probed again at once;
* the primary lost (demoted, or down): every connection open is retired (the idle ones
  closed, those in use when they come back), since all of them are on the old primary.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from ..dialects import Dialect, PostgreSQLDialect, get_dialect
from ..dialects.base import ERR_OK, ERR_RETRY
from ..errors import ConfigError, PoolClosed
from ..hooks import MULTIHOST_EVENTS, PoolEvent
from ..pool import Pool, _set_behind_pooler
from ..stats import HostStats, Stats, combine
from ..url import DEFAULT_PORTS, DatabaseURL
from .hosts import CHECKING, PRIMARY, REPLICA, UP, Host, HostSet, short_error
from .options import NAMES, check_multihost_options

log = logging.getLogger("fastpool")

__all__ = ["HostList", "HostRouting", "MultiHostPool", "ReplicaPools", "Replicas", "RoutedPool", "host_list",
           "open_hosts", "routed_pool", "url_hosts"]

# Connects tried on one host within one connect of the pool before its error is raised:
# a host that refuses new connections while its probe still answers (too many connections)
# is not hammered.
ATTEMPTS_PER_HOST = 2


class HostRouting:
    """What a pool over a host list adds to a pool (``fastpool.Pool``, or fastpool.aio's
    task pool): its connect picks the host, its errors tell the HostSet, its closes count
    per host. Mixed in before the pool class; the fields are the subclass's slots."""

    __slots__ = ()
    _hostset: HostSet
    _target: str
    _fixed_host: Host | None
    _follows_primary: bool

    def _init_routing(self, hostset: HostSet, target: str, fixed_host: Host | None) -> None:
        self._hostset = hostset  # type: ignore[misc]
        self._target = target  # type: ignore[misc]
        self._fixed_host = fixed_host  # type: ignore[misc]
        # The pool of target "primary": its connections all go to the primary, which the
        # errors of its statements can tell has changed.
        self._follows_primary = fixed_host is None and target == PRIMARY  # type: ignore[misc]

    def _nap(self, seconds: float) -> bool:
        """How a caller waiting for a host sleeps when it must not block its thread: False
        here (a thread waits on the HostSet's condition); a task naps on its loop."""
        return False

    def _connect_routed(self) -> Any:
        hostset = self._hostset
        limit = self._pool_options_of()["timeout"]
        deadline = None if limit is None else time.monotonic() + limit
        tries: dict[Host, int] = {}
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            host = self._fixed_host or hostset.pick(self._target, left, nap=self._nap)
            try:
                raw = host.connect()
            except Exception as exc:
                tries[host] = tries.get(host, 0) + 1
                hostset.suspect(host, f"a connect failed: {short_error(exc)}")
                if (self._fixed_host is not None or tries[host] >= ATTEMPTS_PER_HOST
                        or (deadline is not None and time.monotonic() >= deadline)):
                    raise
                continue
            hostset.connected(host)
            # Which host this connection is on; and where its cancel and KILL go.
            raw._fastpool_host = host
            raw._fastpool_side = host.dialect
            try:
                is_primary = host.dialect.role_at_connect(raw)
            except Exception as exc:
                self._close_raw(raw)
                hostset.suspect(host, f"reading its role failed: {short_error(exc)}")
                raise
            if is_primary is not None:
                hostset.probed(host, is_primary, host.lag)
                if self._fixed_host is None and not self._fits(is_primary):
                    # Its role changed since it was picked (a primary demoted, a replica
                    # promoted): pick again, now that the HostSet knows.
                    self._close_raw(raw)
                    tries[host] = tries.get(host, 0) + 1
                    continue
            return raw

    def _pool_options_of(self) -> dict[str, Any]:
        options: dict[str, Any] = self._options  # type: ignore[attr-defined]
        return options

    def _fits(self, is_primary: bool) -> bool:
        """Whether a connection to a server of this role serves the pool's target (a
        primary serves prefer-replica only while no replica qualifies)."""
        target = self._target
        if target == PRIMARY:
            return is_primary
        if target == REPLICA:
            return not is_primary
        if target == "prefer-replica" and is_primary:
            return not self._hostset.replicas_now(None, 0)
        return True

    def _close_raw(self, raw: Any) -> None:
        super()._close_raw(raw)  # type: ignore[misc]
        host = getattr(raw, "_fastpool_host", None)
        if host is not None:
            raw._fastpool_host = None
            self._hostset.closed(host)

    def _classify_error(self, exc: BaseException) -> int:
        kind: int = super()._classify_error(exc)  # type: ignore[misc]
        if not self._follows_primary:
            return kind
        dialect = self._dialect_of(None)  # type: ignore[attr-defined]
        if dialect.refused_as_read_only(exc):
            # The primary was demoted: every connection open is on it. A pool-level
            # statement did not run, and goes again on a new connection (the new primary).
            self._retire_open()  # type: ignore[attr-defined]
            self._hostset.suspect(None, "a write was refused as read-only")
            return ERR_RETRY
        if dialect.aborted_by_shutdown(exc):
            self._hostset.suspect(None, "it is shutting down")
            return ERR_RETRY
        if kind != ERR_OK:
            self._hostset.suspect(None, f"a connection broke: {short_error(exc)}")
        return kind

    def _primary_found(self) -> None:
        """A new primary: a connect held back by a failed one's back-off goes now."""
        opener = self._opener  # type: ignore[attr-defined]
        if opener is not None:
            opener.reset_backoff()


class RoutedPool(HostRouting, Pool):
    """A Pool whose connections go to the host its HostSet picks for its target (or to
    one fixed host: a replica's pool under ``db.replicas``)."""

    __slots__ = ("_hostset", "_target", "_fixed_host", "_follows_primary")

    def __init__(self, hostset: HostSet, dialect: Dialect, *, target: str,
                 fixed_host: Host | None = None, **options: Any) -> None:
        self._init_routing(hostset, target, fixed_host)
        super().__init__(self._connect_routed, driver=dialect, **options)


class ReplicaPools:
    """The pools of the replica hosts under ``replicas`` (one per host, made at its first
    read), as the host list sees them: ``_pools`` maps a host to its sync pool."""

    def __init__(self, closed: Callable[[], bool]) -> None:
        self._closed = closed
        self._lock = threading.Lock()
        self._pools: dict[Host, Any] = {}
        self._made: dict[Host, Any] = {}  # what _new_pool returned (fastpool.aio: its pool)

    def _pool_for(self, host: Host) -> Any:
        pool = self._made.get(host)
        if pool is None:
            with self._lock:
                pool = self._made.get(host)
                if pool is None:
                    if self._closed():
                        raise PoolClosed("pool is closed")
                    pool = self._new_pool(host)
                    self._made[host] = pool
                    self._pools[host] = getattr(pool, "sync", pool)
        return pool

    def _new_pool(self, host: Host) -> Any:
        raise NotImplementedError

    def _in_use(self, host: Host) -> int:
        pool = self._pools.get(host)
        return 0 if pool is None else int(pool._counts()[2])

    def _for_each(self, fn: Callable[[Any], Any]) -> None:
        with self._lock:
            pools = list(self._pools.values())
        for pool in pools:
            fn(pool)

    def _host_down(self, host: Host) -> None:
        pool = self._pools.get(host)
        if pool is not None:
            pool._retire_open()

    def _close_all(self) -> None:
        # A sync close (fastpool.aio's pool runs it off its loop).
        self._for_each(lambda p: p.close())

    def _choose(self, owner: Any, hostset: HostSet, lag: float | None, fallback: bool,
                probed: bool) -> Any:
        """Where a read goes now: the pool of the replica least in use among those that
        qualify; else owner (the primary's pool) with fallback once every host was probed
        (probed); else None: wait for one."""
        hosts = hostset.replicas_now(lag, 0)
        if hosts:
            host = hostset._balance(hosts, self._in_use)
            assert host is not None
            return self._pool_for(host)
        return owner if fallback and probed else None

    @staticmethod
    def _read_only_statement(sync_pool: Any) -> str | None:
        # PostgreSQL opens a replica's transaction read-only; a MariaDB replica's read_only
        # refuses writes by itself.
        if isinstance(sync_pool._dialect_of(None), PostgreSQLDialect):
            return "SET TRANSACTION READ ONLY"
        return None


class Replicas(ReplicaPools):
    """``db.replicas``: the query API on the replicas. Each statement, ``conn()`` and
    ``transaction()`` goes to the replica least in use (``load_balance="random"``: any)
    whose lag is within ``max_replica_lag``, through a pool of its own per host; when none
    qualifies, to the primary (``replica_fallback=True``) or it waits within ``timeout``
    for one. Transactions are opened read-only on PostgreSQL; on MariaDB and MySQL a
    replica's ``read_only`` refuses writes."""

    def __init__(self, owner: MultiHostPool) -> None:
        super().__init__(lambda: bool(owner.closed))
        self._owner = owner

    def _new_pool(self, host: Host) -> RoutedPool:
        return self._owner._new_replica_pool(host)

    def _route(self, timeout: Any = None) -> Pool:
        owner = self._owner
        hostset = owner._hostset
        lag = owner._max_replica_lag
        wait = owner.timeout if timeout is None or not isinstance(timeout, (int, float)) else timeout
        hostset.replicas_now(lag, wait)  # the hosts' first probes in (within wait)
        pool: Pool | None = self._choose(owner, hostset, lag, owner._replica_fallback, True)
        if pool is None:
            pool = self._pool_for(hostset.pick(REPLICA, wait, max_lag=lag, in_use=self._in_use))
        return pool

    def query(self, sql: str, params: Any = (), *, stream: bool = False) -> Any:
        """``Pool.query`` on a replica."""
        return self._route().query(sql, params, stream=stream)

    def query_row(self, sql: str, params: Any = ()) -> Any:
        """``Pool.query_row`` on a replica."""
        return self._route().query_row(sql, params)

    def execute(self, sql: str, params: Any = ()) -> Any:
        """``Pool.execute`` on a replica: for statements that write nothing."""
        return self._route().execute(sql, params)

    def conn(self, timeout: Any = None) -> Any:
        """``Pool.conn`` on a replica."""
        pool = self._route(timeout)
        return pool.conn() if timeout is None else pool.conn(timeout)

    def transaction(self, timeout: Any = None) -> Any:
        """``Pool.transaction`` on a replica, read-only on PostgreSQL."""
        pool = self._route(timeout)
        tx = pool.transaction() if timeout is None else pool.transaction(timeout)
        read_only = self._read_only_statement(pool)
        if read_only is not None:
            try:
                tx.execute(read_only)
            except BaseException:
                tx.rollback()
                raise
        return tx

    def __repr__(self) -> str:
        return f"<fastpool replicas of {self._owner.name!r}: {len(self._made)} pools>"


class HostList(HostRouting):
    """The host list itself, mixed into the pool of its target (MultiHostPool, or
    fastpool.aio's): the HostSet and what it tells, the replicas' pools, the events and
    the stats of all of them. ``_replicas`` has ``_pools`` (host -> its sync pool),
    ``_for_each(fn)``, ``_host_down(host)`` and ``_close_all()``."""

    __slots__ = ()
    _replicas: Any
    _max_replica_lag: float | None
    _replica_fallback: bool
    _replica_max_open: int | None
    _pool_options: dict[str, Any]
    _dialect_name: str

    def _init_host_list(self, hosts: list[Host], multi: dict[str, Any], options: dict[str, Any],
                        dialect_name: str, replicas: Any) -> None:
        hostset = HostSet(hosts, recheck=multi["recheck"], load_balance=multi["load_balance"],
                          emit=self._emit_host_event, primary_lost=self._primary_lost,
                          primary_found=self._primary_found_any)
        self._max_replica_lag = multi["max_replica_lag"]  # type: ignore[misc]
        self._replica_fallback = multi["replica_fallback"]  # type: ignore[misc]
        self._replica_max_open = multi["replica_max_open"]  # type: ignore[misc]
        self._pool_options = dict(options)  # type: ignore[misc]
        self._dialect_name = dialect_name  # type: ignore[misc]
        self._replicas = replicas
        self._init_routing(hostset, multi["target"], None)

    @property
    def target(self) -> str:
        """Where the pool's own statements go: primary, replica, prefer-replica or any."""
        return self._target

    @property
    def hosts(self) -> tuple[str, ...]:
        """The host list's addresses, as given."""
        return tuple(h.address for h in self._hostset.hosts)

    def _replica_pool_args(self, host: Host) -> tuple[Dialect, dict[str, Any]]:
        """(a dialect, the options) of the pool of one replica host under replicas."""
        me: Any = self
        options = {k: v for k, v in self._pool_options.items() if not k.startswith("_")}
        if self._replica_max_open is not None:
            options["max_open"] = self._replica_max_open
        dialect = get_dialect(self._dialect_name)
        dialect.error_class = me._dialect_of(None).error_class
        if getattr(me._dialect_of(None), "behind_pooler", False):
            _set_behind_pooler(dialect, True)
        options["_display"] = f"{me._display} (replica {host.address})"
        options["_name"] = f"{me.name} replica {host.address}"
        return dialect, options

    def _listen_like_me(self, pool: Any) -> None:
        # A replica's pool made later gets the listeners of the pool events given so far.
        me: Any = self
        for event, fns in me._listeners._by_event.items():
            if event not in MULTIHOST_EVENTS:
                for fn in fns:
                    pool.on(event, fn)

    # ---- what the hosts tell -----------------------------------------------------------
    def _primary_lost(self, host: Host) -> None:
        me: Any = self
        if self._follows_primary:
            closed = me._retire_open()
            log.info("fastpool %s: %s is no longer the primary; %d idle connections closed,"
                     " those in use close when given back", me.name, host.address, closed)

    def _primary_found_any(self, host: Host) -> None:
        self._primary_found()

    def _emit_host_event(self, event: str, address: str, reason: str | None) -> None:
        me: Any = self
        if event == "host_down":
            for h in self._hostset.hosts:
                if h.address == address:
                    self._replicas._host_down(h)
        if event in ("role_changed", "host_down") and self._target in (REPLICA, "prefer-replica"):
            # A pool that reads on replicas: a host that changed role may hold some of its
            # connections (a replica promoted). Which ones the core does not know, so all
            # are retired; roles change seldom.
            me._retire_open()
        me._listeners.emit(event, me.name, None, None, reason, address)

    # ---- the pool's API, over every host -------------------------------------------------
    def on(self, event: str, fn: Callable[[PoolEvent], Any]) -> Callable[[PoolEvent], Any]:
        """``Pool.on``, for every pool of the host list; and the host events
        ``failover``, ``host_down``, ``host_up``, ``role_changed`` (``PoolEvent.host``
        names the host)."""
        super().on(event, fn)  # type: ignore[misc]
        if event not in MULTIHOST_EVENTS:
            self._replicas._for_each(lambda p: p.on(event, fn))
        return fn

    def off(self, event: str, fn: Callable[[PoolEvent], Any]) -> bool:
        """``Pool.off``, for every pool of the host list."""
        removed: bool = super().off(event, fn)  # type: ignore[misc]
        if event not in MULTIHOST_EVENTS:
            self._replicas._for_each(lambda p: p.off(event, fn))
        return removed

    def stats(self, reset: bool = False) -> Stats:
        """The counters of every pool of the host list together (the primary's and each
        replica's), and ``hosts``: one ``HostStats`` per host."""
        me: Any = self
        own: Stats = super().stats(reset)  # type: ignore[misc]
        parts = [own]
        by_host: dict[Host, Stats] = {}
        for host, pool in list(self._replicas._pools.items()):
            s = pool.stats(reset)
            parts.append(s)
            by_host[host] = s
        primary = self._hostset.primary
        rows = []
        for h in self._hostset.hosts:
            idle = by_host[h].idle if h in by_host else 0
            if h is primary and self._follows_primary:
                idle += own.idle
            idle = min(idle, max(h.open, 0))
            rows.append(HostStats(address=h.address, role=h.role, state=h.state,
                                  open=max(h.open, 0), in_use=max(h.open - idle, 0),
                                  idle=idle, lag=h.lag))
        return combine(me.name, parts, tuple(rows))

    def _stop_workers(self) -> None:
        # Pool.close() (and fastpool.aio's close, off the loop) ends here: the replicas'
        # pools and the host watchers stop with the pool's own workers.
        super()._stop_workers()  # type: ignore[misc]
        self._replicas._close_all()
        self._hostset.close()

    def _timeout_message(self, waited: float) -> str:
        # A caller that timed out while no host of the target was known learns why: every
        # host with what is known of it.
        base: str = super()._timeout_message(waited)  # type: ignore[misc]
        hostset = self._hostset
        if self._fixed_host is None and hostset.primary is None and self._target == PRIMARY:
            return f"{base}; no primary host known: " + "; ".join(
                h.describe() for h in hostset.hosts)
        return base

    def _after_fork_child(self) -> None:
        self._hostset.after_fork()
        super()._after_fork_child()  # type: ignore[misc]

    def __repr__(self) -> str:
        hosts = ", ".join(h.describe() for h in self._hostset.hosts)
        return f"{super().__repr__()[:-1]} target={self._target} hosts=[{hosts}]>"


class MultiHostPool(HostList, Pool):
    """A pool over a host list (``fastpool.open("postgresql://app:pw@h1,h2/shop")``): the
    pool's own query API goes to its ``target`` (the primary by default), following it
    through failovers without a restart; ``db.replicas`` reads on replicas;
    ``stats().hosts`` and the events ``failover``, ``host_down``, ``host_up`` and
    ``role_changed`` tell what the hosts do. Options beyond the pool's: ``hosts``,
    ``target``, ``recheck``, ``load_balance``, ``max_replica_lag``, ``replica_fallback``,
    ``replica_max_open`` (see the "Primary and replicas" guide)."""

    __slots__ = ("_hostset", "_target", "_fixed_host", "_follows_primary", "_replicas",
                 "_max_replica_lag", "_replica_fallback", "_replica_max_open",
                 "_pool_options", "_dialect_name")

    def __init__(self, hosts: list[Host], dialect: Dialect, dialect_name: str, *,
                 multi: dict[str, Any], **options: Any) -> None:
        self._init_host_list(hosts, multi, options, dialect_name, Replicas(self))
        super().__init__(self._connect_routed, driver=dialect, **options)

    @property
    def replicas(self) -> Replicas:
        """The query API on the replicas (see ``Replicas``)."""
        return self._replicas  # type: ignore[no-any-return]

    def _new_replica_pool(self, host: Host) -> RoutedPool:
        dialect, options = self._replica_pool_args(host)
        pool = RoutedPool(self._hostset, dialect, target=REPLICA, fixed_host=host, **options)
        self._listen_like_me(pool)
        return pool


def url_hosts(url: DatabaseURL, connect_kwargs: dict[str, Any]
              ) -> tuple[int, dict[str, Any], tuple[tuple[str, int], ...] | None]:
    """(the scheme's default port, the connect keywords less host and port, the one host
    the URL names or None) of a URL opened as a host list."""
    default_port = DEFAULT_PORTS.get(url.scheme)
    if default_port is None:
        raise ConfigError(f"a host list needs postgresql:// or mysql://, not {url.scheme}://")
    kwargs = dict(connect_kwargs)
    host = kwargs.pop("host", None)
    port = kwargs.pop("port", None)
    single = None if host is None else ((host, default_port if port is None else port),)
    return default_port, kwargs, single


def open_hosts(url: DatabaseURL, dialect_name: str, options: dict[str, Any]) -> MultiHostPool:
    """The pool of fastpool.open() for a host list (or any host-list option)."""
    default_port, kwargs, single = url_hosts(url, url.connect_kwargs)

    def connect_for(dialect: Dialect, host: str, port: int) -> Callable[[], Any]:
        return dialect.connect_factory({**kwargs, "host": host, "port": port})

    return routed_pool(dialect_name, connect_for, options, default_port=default_port,
                       single=single, shown=url.masked, _display=url.masked, _name=url.name)


def routed_pool(dialect_name: str, connect_for: Callable[[Dialect, str, int], Callable[[], Any]],
                options: dict[str, Any], *, default_port: int,
                single: tuple[tuple[str, int], ...] | None, shown: str,
                **private: Any) -> MultiHostPool:
    """A MultiHostPool: options are the pool's and the host list's together; the hosts
    come from hosts= or, failing that, single (the one host a URL or setting names);
    connect_for(dialect, host, port) gives the connect callable of one host (each host has
    a dialect instance of its own)."""
    hosts, main, multi = host_list(dialect_name, connect_for, options, default_port=default_port,
                                   single=single, shown=shown)
    return MultiHostPool(hosts, main, dialect_name, multi=multi, **private, **options)


def host_list(dialect_name: str, connect_for: Callable[[Dialect, str, int], Callable[[], Any]],
              options: dict[str, Any], *, default_port: int,
              single: tuple[tuple[str, int], ...] | None,
              shown: str) -> tuple[list[Host], Dialect, dict[str, Any]]:
    """(the hosts, the pool's own dialect, the host-list options), the host-list options
    taken out of options (and behind_pooler applied); ConfigError for a bad one."""
    multi_given = {k: options.pop(k) for k in list(options) if k in NAMES}
    # Each option checked before the hosts are looked for: its own error comes first.
    check_multihost_options({k: v for k, v in multi_given.items() if k != "hosts"}, default_port)
    if "hosts" in multi_given and single is not None:
        raise ConfigError(f"hosts= was given and {shown!r} names a host too: give the hosts once")
    if "hosts" not in multi_given:
        if single is None:
            raise ConfigError(f"{shown!r} names no host: a host list needs h1:port,h2:port"
                              f" in the URL or hosts=[(host, port), ...]")
        multi_given["hosts"] = single
    multi = check_multihost_options(multi_given, default_port)
    hosts = []
    for host, port in multi["hosts"]:
        d = get_dialect(dialect_name)
        hosts.append(Host(host, port, d, connect_for(d, host, port)))
    main = get_dialect(dialect_name)
    # The main dialect is the pool's (classify, reset, ...); it opens no connection itself.
    connect_for(main, hosts[0].host, hosts[0].port)
    behind = options.pop("behind_pooler", None)
    if behind is not None:
        _set_behind_pooler(main, behind)
        for h in hosts:
            _set_behind_pooler(h.dialect, behind)
    return hosts, main, multi
