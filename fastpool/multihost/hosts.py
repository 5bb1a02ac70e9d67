"""The hosts of a host list and what is known of each: its role, its state, its lag.

``HostSet`` is the one place that knows: the watchers (one thread per host) write what
their probes find, the pools read it when they connect. It holds no connection of a pool
and never touches the core; it tells the pool what changed through two callbacks
(``primary_lost``, ``primary_found``) and the events it emits.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..dialects.base import Dialect, shut_socket
from ..errors import PoolTimeout
from ..workers import Looper, WeakCallable

log = logging.getLogger("fastpool")

PRIMARY = "primary"
REPLICA = "replica"
UNKNOWN = "unknown"
# A host's state: UNKNOWN until its first probe; CHECKING after a connect to it failed or
# a statement said its role may have changed, until its watcher probed it again.
UP = "up"
DOWN = "down"
CHECKING = "checking"

# How often a watcher probes while the pool's target has no host (a failover under way).
FAST_RECHECK = 0.1
# How often, at most, a watcher probes a host that is down: its return (as a replica,
# say) is noticed within a second, at the cost of one connect attempt a second, made by
# the watcher, never by a caller.
DOWN_RECHECK = 1.0


def address_of(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(eq=False)
class Host:
    """One host of the list. Its fields are written under the HostSet's lock."""

    host: str
    port: int
    dialect: Dialect = field(repr=False)
    connect: Callable[[], Any] = field(repr=False)
    role: str = UNKNOWN
    state: str = UNKNOWN
    lag: float | None = None
    error: str = ""          # why its last probe or connect failed (type and first line)
    probed_at: float = 0.0   # time.monotonic() of its last probe
    open: int = 0            # connections open to it, all pools of the host list together

    @property
    def address(self) -> str:
        return address_of(self.host, self.port)

    def describe(self) -> str:
        if self.state == DOWN:
            return f"{self.address} down ({self.error})" if self.error else f"{self.address} down"
        if self.state in (UNKNOWN, CHECKING) and self.role == UNKNOWN:
            return f"{self.address} {self.state}"
        lag = f", lag {self.lag:.1f}s" if self.lag is not None and self.role == REPLICA else ""
        state = "" if self.state == UP else f", {self.state}"
        return f"{self.address} {self.role}{state}{lag}"


def short_error(exc: BaseException) -> str:
    # Driver messages name hosts and ports, never passwords; the first line is enough.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


class HostSet:
    """The hosts, their roles and states; callers wait here for a host of their target."""

    def __init__(self, hosts: list[Host], *, recheck: float, load_balance: str,
                 emit: Callable[[str, str, str | None], None],
                 primary_lost: Callable[[Host], None],
                 primary_found: Callable[[Host], None]) -> None:
        self.hosts = hosts
        self.recheck = recheck
        self.load_balance = load_balance
        # Held weakly (the pool's bound methods): a pool dropped without close() can still
        # be collected, and its watchers then end by themselves (owner_gone).
        self._emit = WeakCallable(emit)
        self._primary_lost = WeakCallable(primary_lost)
        self._primary_found = WeakCallable(primary_found)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # _lock protects the Host fields and the following.
        self.primary: Host | None = None       # the host writes go to; None while unknown
        self._last_primary: Host | None = None  # the one before, for the failover event
        self._watchers: list[HostWatcher] | None = None
        self._closed = False
        self._waiting = 0  # callers waiting for a host: watchers probe fast meanwhile

    # ---- what the watchers and the pools report -------------------------------------
    def probed(self, host: Host, is_primary: bool | None, lag: float | None = None,
               error: BaseException | None = None) -> None:
        """A probe's (or a new connection's) finding: its role, or the error that says
        the host is down."""
        events: list[tuple[str, str, str | None]] = []
        lost = found = None
        with self._lock:
            host.probed_at = time.monotonic()
            old_state, old_role = host.state, host.role
            if error is not None:
                host.state, host.error = DOWN, short_error(error)
                if old_state != DOWN:
                    events.append(("host_down", host.address, host.error))
            else:
                host.state, host.error = UP, ""
                if is_primary is not None:
                    host.role = PRIMARY if is_primary else REPLICA
                host.lag = lag if host.role == REPLICA else None
                if old_state == DOWN:
                    events.append(("host_up", host.address, None))
                if old_role != UNKNOWN and host.role != old_role:
                    events.append(("role_changed", host.address, f"{old_role} -> {host.role}"))
            lost, found = self._elect_locked(events)
            if any(e[0] == "role_changed" for e in events):
                self._kick_locked()  # roles moved: the other hosts' may have too
            self._changed.notify_all()
        self._after(events, lost, found)

    def suspect(self, host: Host | None, reason: str) -> None:
        """A connect to host failed, or a statement on it said its role may have changed:
        no new connection goes there until its watcher has probed it again (now)."""
        with self._lock:
            host = host or self.primary
            if host is not None and host.state == UP:
                # Its role stands (its connections stay) until the probe says otherwise.
                host.state = CHECKING
                log.debug("fastpool: host %s: %s; probing it again", host.address, reason)
            self._kick_locked()

    def _elect_locked(self, events: list[tuple[str, str, str | None]]) -> tuple[Host | None, Host | None]:
        # The primary: a host whose last probe said it takes writes, and which is up or
        # being probed again; the one before while it still qualifies (two hosts taking
        # writes at once are a split brain the orchestrator must end: no flapping here).
        candidates = [h for h in self.hosts if h.state in (UP, CHECKING) and h.role == PRIMARY]
        old = self.primary
        new = old if old in candidates else (candidates[0] if candidates else None)
        if new is old:
            return None, None
        self.primary = new
        lost = old
        found = None
        if new is not None:
            found = new
            if self._last_primary is not None and self._last_primary is not new:
                events.append(("failover", new.address, f"from {self._last_primary.address}"))
            self._last_primary = new
        return lost, found

    def _after(self, events: list[tuple[str, str, str | None]], lost: Host | None,
               found: Host | None) -> None:
        # Outside the lock: the callbacks reach the pool, the events user code.
        lost_fn, found_fn, emit = self._primary_lost(), self._primary_found(), self._emit()
        if lost is not None and lost_fn is not None:
            lost_fn(lost)
        if found is not None and found_fn is not None:
            found_fn(found)
        for event, address, reason in events:
            log.info("fastpool: %s %s%s", event, address, f" ({reason})" if reason else "")
            if emit is not None:
                emit(event, address, reason)

    def owner_gone(self) -> bool:
        """True once the pool this HostSet serves was collected (dropped unclosed)."""
        return self._emit() is None

    def connected(self, host: Host) -> None:
        with self._lock:
            host.open += 1

    def closed(self, host: Host) -> None:
        with self._lock:
            host.open -= 1

    # ---- what the pools ask ------------------------------------------------------------
    def pick(self, target: str, timeout: float | None, *, max_lag: float | None = None,
             in_use: Callable[[Host], int] | None = None,
             nap: Callable[[float], bool] | None = None) -> Host:
        """A host for a new connection of the target, waiting (within timeout; None:
        forever) while there is none; PoolTimeout naming every host with its state.
        nap(seconds): how a caller that must not block its thread (a task) sleeps; it
        returns False when the caller may block."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.start_watchers()
        with self._lock:
            while True:
                host = self._pick_locked(target, max_lag, in_use)
                if host is not None:
                    return host
                if self._closed:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._waiting += 1
                try:
                    self._kick_locked()
                    self._wait_locked(left, nap)
                finally:
                    self._waiting -= 1
            described = "; ".join(h.describe() for h in self.hosts)
        raise PoolTimeout(f"no {target} host within {timeout:.3g}s: {described}" if timeout is not None
                          else f"no {target} host: {described}")

    def _wait_locked(self, left: float | None, nap: Callable[[float], bool] | None) -> None:
        # A task naps on its loop (the lock released meanwhile) and looks again; a thread
        # waits on the condition, woken by the next finding.
        if nap is not None:
            self._lock.release()
            try:
                napped = nap(FAST_RECHECK if left is None else min(left, FAST_RECHECK))
            finally:
                self._lock.acquire()
            if napped:
                return
        self._changed.wait(left)

    def _pick_locked(self, target: str, max_lag: float | None,
                     in_use: Callable[[Host], int] | None) -> Host | None:
        if target == PRIMARY:
            # A primary being probed again takes no new connection until it answers.
            primary = self.primary
            return primary if primary is not None and primary.state == UP else None
        up = [h for h in self.hosts if h.state == UP and h.role != UNKNOWN]
        replicas = self._replicas_locked(max_lag)
        if target == REPLICA or (target == "prefer-replica" and replicas):
            return self._balance(replicas, in_use)
        if target == "prefer-replica":
            if any(h.state == UNKNOWN for h in self.hosts):
                return None  # a replica may be among the hosts not probed yet: wait
            return self._pick_locked(PRIMARY, max_lag, in_use)
        return self._balance(up, in_use)  # "any"

    def _balance(self, hosts: list[Host], in_use: Callable[[Host], int] | None) -> Host | None:
        if not hosts:
            return None
        if self.load_balance == "random":
            return random.choice(hosts)
        count = in_use or (lambda h: h.open)
        # Ties (replicas equally idle, as under sequential reads) are broken at random, so
        # that reads spread rather than all go to the first host listed.
        counts = [count(h) for h in hosts]
        least = min(counts)
        return random.choice([h for h, c in zip(hosts, counts) if c == least])

    def _replicas_locked(self, max_lag: float | None) -> list[Host]:
        # The replicas a read may go to: up, and within max_lag (an unknown lag is not).
        return [h for h in self.hosts if h.state == UP and h.role == REPLICA
                and (max_lag is None or (h.lag is not None and h.lag <= max_lag))]

    def replicas_now(self, max_lag: float | None, timeout: float | None) -> list[Host]:
        """The replicas that qualify now; before the first probes are in, it waits for
        them (within timeout) rather than call a host list without replicas."""
        self.start_watchers()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while any(h.state == UNKNOWN for h in self.hosts) and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._wait_locked(left, None)
            return self._replicas_locked(max_lag)

    # ---- the watchers ----------------------------------------------------------------
    def start_watchers(self) -> None:
        if self._watchers is not None:
            return
        with self._lock:
            if self._watchers is None and not self._closed:
                self._watchers = [HostWatcher(self, h) for h in self.hosts]

    def kick(self) -> None:
        with self._lock:
            self._kick_locked()

    def _kick_locked(self) -> None:
        for w in self._watchers or ():
            w.kick()

    def unsettled(self) -> bool:
        """True while a caller waits for a host, or a host is being re-checked."""
        return self._waiting > 0 or any(h.state == CHECKING for h in self.hosts)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            watchers, self._watchers = self._watchers or [], []
            self._changed.notify_all()
        for w in watchers:
            w.stop()
        for w in watchers:
            w.join(5.0)

    def after_fork(self) -> None:
        # The parent's watcher threads do not exist in the child; they start again on use.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._watchers = None
        self._waiting = 0


class HostWatcher(Looper):
    """Probes one host every ``recheck`` seconds (every FAST_RECHECK while a failover is
    under way), and at once when kicked, over a connection of its own; a probe that does
    not answer within the host's connect timeout is cut."""

    def __init__(self, hosts: HostSet, host: Host) -> None:
        self._hosts = hosts
        self._host = host
        self._raw: Any = None
        self.name = f"host watcher {host.address}"  # in the log if it ever crashes
        self._start_loop(f"fastpool-host {host.address}")

    def kick(self) -> None:
        self.wake()

    def _run(self) -> None:
        try:
            super()._run()
        finally:
            self._drop()

    def _step(self) -> float | None:
        if self._hosts.owner_gone():
            return None  # the pool was dropped unclosed
        self._probe()
        if self._hosts.unsettled():
            return FAST_RECHECK
        if self._host.state == DOWN:
            return min(self._hosts.recheck, DOWN_RECHECK)
        return self._hosts.recheck

    def _probe(self) -> None:
        host = self._host
        try:
            if self._raw is None:
                raw = host.connect()
                host.dialect.prepare(raw)
                self._raw = raw
            is_primary, lag = self._bounded(host.dialect.probe_role, self._raw)
        except Exception as exc:
            self._drop()
            if not self._stop.is_set():
                self._hosts.probed(host, None, error=exc)
            return
        if not self._stop.is_set():
            self._hosts.probed(host, is_primary, lag)

    def _bounded(self, probe: Callable[[Any], Any], raw: Any) -> Any:
        # A host that stops answering (blackholed) must not hold the probe forever: past
        # PROBE_TIMEOUT its socket is shut under the driver, whose read then fails.
        fd = host_fileno(self._host.dialect, raw)
        timer = threading.Timer(PROBE_TIMEOUT, shut_socket, (fd,)) if fd >= 0 else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            return probe(raw)
        finally:
            if timer is not None:
                timer.cancel()

    def _drop(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            try:
                self._host.dialect.close(raw)
            except Exception:
                pass


# Seconds a probe's query may take before its connection is cut.
PROBE_TIMEOUT = 5.0


def host_fileno(dialect: Dialect, raw: Any) -> int:
    try:
        return dialect.fileno(raw)
    except Exception:
        return -1
