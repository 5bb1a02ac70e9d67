"""Host lists under fastpool.aio: the HostSet, routing and failover of
``fastpool/multihost`` on fastpool.aio's task pool, and ``db.replicas`` with the async
query API. A task that must wait for a host naps on its loop; the host watchers are
threads, whose probes run on the pool's loop like the opener's connects."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from ..dialects import Dialect
from ..errors import ConfigError, PoolClosed, PoolTimeout
from ..multihost.hosts import REPLICA, UNKNOWN, Host
from ..multihost.pool import HostList, HostRouting, ReplicaPools, host_list, url_hosts
from ..url import DatabaseURL
from .bridge import await_, in_bridge
from .pool import Pool, TaskPool

__all__ = ["AioReplicas", "MultiHostAioPool", "open_hosts"]

# How often a task looks again while it waits for a replica's first probe or for one to
# qualify.
ROUTE_POLL = 0.02


class _TaskRouting(HostRouting):
    __slots__ = ()

    def _nap(self, seconds: float) -> bool:
        # A task inside the bridge sleeps on its loop; a worker thread waits as threads do.
        if not in_bridge():
            return False
        await_(asyncio.sleep(seconds))
        return True


class RoutedTaskPool(_TaskRouting, TaskPool):
    """fastpool.aio's task pool on one host of a host list (a replica's, under replicas)."""

    __slots__ = ("_hostset", "_target", "_fixed_host", "_follows_primary")

    def __init__(self, aio: Pool, connect: Callable[[], Any], *, hostset: Any, target: str,
                 fixed_host: Host | None = None, **kwargs: Any) -> None:
        self._init_routing(hostset, target, fixed_host)
        super().__init__(aio, self._connect_routed, **kwargs)


class MultiHostTaskPool(HostList, _TaskRouting, TaskPool):
    """fastpool.aio's task pool over a host list: the sync side of a MultiHostAioPool."""

    __slots__ = ("_hostset", "_target", "_fixed_host", "_follows_primary", "_replicas",
                 "_max_replica_lag", "_replica_fallback", "_replica_max_open",
                 "_pool_options", "_dialect_name")

    def __init__(self, aio: Pool, connect: Callable[[], Any], *, hosts: list[Host],
                 dialect_name: str, multi: dict[str, Any], user_options: dict[str, Any],
                 **kwargs: Any) -> None:
        self._init_host_list(hosts, multi, kwargs, dialect_name, AioReplicas(aio, user_options))
        super().__init__(aio, self._connect_routed, **kwargs)


class MultiHostAioPool(Pool):
    """A fastpool.aio pool over a host list (``fastpool.aio.open("postgresql://app:pw@h1,h2/
    shop")``): what ``fastpool.MultiHostPool`` is for threads, for tasks. ``replicas`` has
    the async query API."""

    __slots__ = ()

    @property
    def replicas(self) -> AioReplicas:
        """The async query API on the replicas (see ``AioReplicas``)."""
        replicas: AioReplicas = self.sync._replicas  # type: ignore[attr-defined]
        return replicas

    @property
    def target(self) -> str:
        """Where the pool's own statements go: primary, replica, prefer-replica or any."""
        target: str = self.sync._target  # type: ignore[attr-defined]
        return target

    @property
    def hosts(self) -> tuple[str, ...]:
        """The host list's addresses, as given."""
        hosts: tuple[str, ...] = self.sync.hosts  # type: ignore[attr-defined]
        return hosts


class AioReplicas(ReplicaPools):
    """``db.replicas`` under fastpool.aio: ``query``, ``query_row`` and ``execute`` are
    awaited, ``conn()`` and ``transaction()`` are ``async with``; each goes to a replica as
    ``fastpool.multihost.pool.Replicas`` says, through a fastpool.aio pool per host. A
    task waits for the hosts' first probes, or for a replica to qualify, on its loop."""

    def __init__(self, owner: Pool, user_options: dict[str, Any]) -> None:
        super().__init__(lambda: owner.closed)
        self._owner = owner
        self._user_options = user_options

    def _sync(self) -> Any:
        return self._owner.sync

    def _new_pool(self, host: Host) -> Pool:
        sync = self._sync()
        dialect, args = sync._replica_pool_args(host)
        options = {**self._user_options, "_display": args["_display"], "_name": args["_name"]}
        if "max_open" in args:
            options["max_open"] = args["max_open"]
        pool = Pool(_unused_connect, driver=dialect,
                    _sync=functools.partial(RoutedTaskPool, hostset=sync._hostset,
                                            target=REPLICA, fixed_host=host), **options)
        sync._listen_like_me(pool.sync)
        return pool

    async def _route(self) -> Pool:
        self._owner._bind()  # the hosts' probes run on this loop: it must be known first
        sync = self._sync()
        hostset = sync._hostset
        lag = sync._max_replica_lag
        limit = sync.timeout
        deadline = None if limit is None else time.monotonic() + limit
        hostset.start_watchers()
        while True:
            probed = not any(h.state == UNKNOWN for h in hostset.hosts)
            pool: Pool | None = self._choose(self._owner, hostset, lag, sync._replica_fallback,
                                             probed)
            if pool is not None:
                return pool
            if deadline is not None and time.monotonic() >= deadline:
                described = "; ".join(h.describe() for h in hostset.hosts)
                raise PoolTimeout(f"no replica host within {limit:.3g}s: {described}")
            await asyncio.sleep(ROUTE_POLL)

    async def query(self, sql: str, params: Any = None) -> Any:
        """``await db.replicas.query(...)``: the rows, read at once, from a replica."""
        return await (await self._route()).query(sql, params)

    async def query_row(self, sql: str, params: Any = None) -> Any:
        """``Pool.query_row`` on a replica."""
        return await (await self._route()).query_row(sql, params)

    async def execute(self, sql: str, params: Any = None) -> Any:
        """``Pool.execute`` on a replica: for statements that write nothing."""
        return await (await self._route()).execute(sql, params)

    @contextlib.asynccontextmanager
    async def conn(self) -> AsyncIterator[Any]:
        """``async with db.replicas.conn() as c``: a dedicated connection on a replica."""
        pool = await self._route()
        async with pool.conn() as c:
            yield c

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """``async with db.replicas.transaction() as tx``: on a replica, read-only on
        PostgreSQL."""
        pool = await self._route()
        async with pool.transaction() as tx:
            read_only = self._read_only_statement(pool.sync)
            if read_only is not None:
                await tx.execute(read_only)
            yield tx

    def __repr__(self) -> str:
        return f"<fastpool.aio replicas of {self._sync().name!r}: {len(self._made)} pools>"


async def _unused_connect() -> Any:
    raise ConfigError("a host list's pool connects through its hosts")  # never called


def open_hosts(url: DatabaseURL, dialect: Dialect, connect_kwargs: dict[str, Any],
               options: dict[str, Any]) -> MultiHostAioPool:
    """The pool of fastpool.aio.open() for a host list (or any host-list option)."""
    default_port, kwargs, single = url_hosts(url, connect_kwargs)
    owner: list[Pool] = []  # the pool, once made: its loop runs every host's connects

    def connect_for(d: Dialect, host: str, port: int) -> Callable[[], Any]:
        factory: Callable[[], Awaitable[Any]] = d.connect_factory({**kwargs, "host": host, "port": port})
        return lambda: owner[0]._connect_sync(factory)

    dialect_name = dialect.name
    hosts, main, multi = host_list(dialect_name, connect_for, options, default_port=default_port,
                                   single=single, shown=url.masked)
    user_options = dict(options)  # the pool's own options (host_list took the rest)
    pool = MultiHostAioPool(_unused_connect, driver=main, _display=url.masked, _name=url.name,
                            _sync=functools.partial(MultiHostTaskPool, hosts=hosts,
                                                    dialect_name=dialect_name, multi=multi,
                                                    user_options=user_options),
                            **options)
    owner.append(pool)
    return pool

