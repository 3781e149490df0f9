"""PoolState: connection-pool decisions for one origin (proxy/core/pool.py).

Transcripts in the httpcore manner: each step is a decision asked for or a
fact reported, and the pool's repr ("1 active, 0 idle, ...") is asserted
after the steps that change it.  Connections are plain objects and time is a
number passed in, so no test sleeps.
"""

from __future__ import annotations

import pytest

from proxy.core.pool import CONNECT, REFUSE, REUSE, WAIT, PoolState, ServerState


class Conn:
    """An opaque connection handle."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Conn {self.name}>"


def pool(servers=(("a", 80),), **settings) -> PoolState:
    settings.setdefault("max_connections", 10)
    settings.setdefault("idle_timeout", 30.0)
    settings.setdefault("max_queue", 5)
    settings.setdefault("max_fails", 1)
    settings.setdefault("fail_timeout", 10.0)
    return PoolState("web", list(servers), **settings)


def counts(state: PoolState) -> str:
    return repr(state).split(": ", 1)[1].rstrip(">")


def open_connection(state: PoolState, now: float, name: str) -> tuple[Conn, ServerState]:
    """checkout() -> CONNECT -> connected(): an active connection."""
    decision = state.checkout(now)
    assert decision.action == CONNECT, decision
    state.connected(decision.server)
    return Conn(name), decision.server


def idle_connection(state: PoolState, now: float, name: str) -> tuple[Conn, ServerState]:
    conn, server = open_connection(state, now, name)
    state.released(conn, server, now)
    return conn, server


# --- Basics ------------------------------------------------------------------------


def test_repr_shows_every_counter():
    assert repr(pool()) == "<Pool web: 0 active, 0 idle, 0 connecting, 0 queued>"


def test_a_pool_needs_a_server():
    with pytest.raises(ValueError):
        PoolState("web", [], max_connections=1, idle_timeout=1, max_queue=1, max_fails=1, fail_timeout=1)


@pytest.mark.parametrize(("host", "authority"), [("10.0.0.1", b"10.0.0.1:8080"), ("::1", b"[::1]:8080"), ("app", b"app:8080")])
def test_server_authority_brackets_ipv6(host, authority):
    assert ServerState(host, 8080).authority == authority


def test_connect_then_connected_then_released_then_closed_keeps_counters_exact():
    state = pool()
    decision = state.checkout(0)
    assert decision.action == CONNECT
    assert counts(state) == "0 active, 0 idle, 1 connecting, 0 queued"
    state.connected(decision.server)
    assert counts(state) == "1 active, 0 idle, 0 connecting, 0 queued"
    conn = Conn("c1")
    state.released(conn, decision.server, 1)
    assert counts(state) == "0 active, 1 idle, 0 connecting, 0 queued"
    state.closed(conn, decision.server, was_active=False)
    assert counts(state) == "0 active, 0 idle, 0 connecting, 0 queued"
    assert decision.server.idle == []


def test_closing_an_active_connection_frees_its_slot():
    state = pool()
    conn, server = open_connection(state, 0, "c1")
    state.closed(conn, server, was_active=True)
    assert counts(state) == "0 active, 0 idle, 0 connecting, 0 queued"


def test_closing_an_unknown_idle_connection_changes_nothing():
    state = pool()
    conn, server = idle_connection(state, 0, "c1")
    state.closed(Conn("stranger"), server, was_active=False)
    assert counts(state) == "0 active, 1 idle, 0 connecting, 0 queued"
    assert server.idle == [(conn, 0)]


def test_connect_failed_frees_the_slot_and_counts_a_failure():
    state = pool(max_fails=2)
    decision = state.checkout(0)
    state.connect_failed(decision.server, 0)
    assert counts(state) == "0 active, 0 idle, 0 connecting, 0 queued"
    assert decision.server.fails == 1


# --- Round robin and failures -------------------------------------------------------------

THREE = (("a", 80), ("b", 80), ("c", 80))


def test_servers_are_taken_round_robin():
    state = pool(THREE)
    assert [state.checkout(0).server.host for _ in range(4)] == ["a", "b", "c", "a"]


def test_server_is_marked_failed_after_max_fails_within_fail_timeout():
    state = pool(THREE, max_fails=2, fail_timeout=10)
    b = state.servers[1]
    state.record_failure(b, 0)
    assert not b.is_down(1)
    state.record_failure(b, 5)
    assert b.is_down(6)
    assert [state.checkout(6).server.host for _ in range(4)] == ["a", "c", "a", "c"]


def test_failures_further_apart_than_fail_timeout_do_not_add_up():
    state = pool(max_fails=2, fail_timeout=10)
    server = state.servers[0]
    state.record_failure(server, 0)
    state.record_failure(server, 11)
    assert not server.is_down(11)


def test_success_resets_the_failure_count():
    state = pool(max_fails=2, fail_timeout=10)
    server = state.servers[0]
    state.record_failure(server, 0)
    state.record_success(server)
    state.record_failure(server, 1)
    assert not server.is_down(1)


def test_failed_server_recovers_after_fail_timeout():
    state = pool(THREE, max_fails=1, fail_timeout=10)
    b = state.servers[1]
    state.record_failure(b, 100)
    assert b.is_down(109.9)
    assert not b.is_down(110)
    assert [state.checkout(110).server.host for _ in range(3)] == ["a", "b", "c"]


def test_when_every_server_is_down_the_earliest_to_recover_is_tried():
    state = pool(THREE, max_fails=1, fail_timeout=10)
    a, b, c = state.servers
    state.record_failure(a, 3)
    state.record_failure(b, 1)  # recovers first, at 11
    state.record_failure(c, 2)
    decision = state.checkout(5)
    assert decision.action == CONNECT
    assert decision.server is b


# --- Idle connections ---------------------------------------------------------------------


def test_idle_connections_are_reused_most_recent_first():
    state = pool()
    first, server = open_connection(state, 0, "first")
    second, _ = open_connection(state, 0, "second")
    state.released(first, server, 1)
    state.released(second, server, 2)
    assert counts(state) == "0 active, 2 idle, 0 connecting, 0 queued"
    reused = [state.checkout(3), state.checkout(3)]
    assert [(d.action, d.connection) for d in reused] == [(REUSE, second), (REUSE, first)]
    assert counts(state) == "2 active, 0 idle, 0 connecting, 0 queued"


def test_reuse_prefers_the_round_robin_server():
    state = pool((("a", 80), ("b", 80)))
    on_a, a = idle_connection(state, 0, "on-a")  # round robin now points at b
    decision = state.checkout(1)
    assert decision.action == CONNECT
    assert decision.server.host == "b"
    assert counts(state) == "0 active, 1 idle, 1 connecting, 0 queued"


def test_expired_idle_connection_is_never_reused_and_is_handed_back_for_closing():
    state = pool(idle_timeout=30)
    conn, server = idle_connection(state, 0, "stale")
    decision = state.checkout(30)  # exactly idle_timeout: expired
    assert decision.action == CONNECT
    assert state.take_expired() == [conn]
    assert state.take_expired() == []
    assert counts(state) == "0 active, 0 idle, 1 connecting, 0 queued"


def test_idle_connection_just_under_idle_timeout_is_reused():
    state = pool(idle_timeout=30)
    conn, _ = idle_connection(state, 0, "fresh")
    decision = state.checkout(29.9)
    assert (decision.action, decision.connection) == (REUSE, conn)
    assert state.take_expired() == []


def test_expire_idle_removes_only_expired_connections():
    state = pool((("a", 80), ("b", 80)), idle_timeout=30)
    old_a, a = idle_connection(state, 0, "old-a")
    old_b, b = idle_connection(state, 5, "old-b")
    decision = state.checkout(10, fresh=True)  # round robin: a again, but a new connection
    assert (decision.action, decision.server) == (CONNECT, a)
    state.connected(a)
    young_a = Conn("young-a")
    state.released(young_a, a, 20)
    assert counts(state) == "0 active, 3 idle, 0 connecting, 0 queued"
    assert state.expire_idle(35) == [old_a, old_b]
    assert counts(state) == "0 active, 1 idle, 0 connecting, 0 queued"
    assert a.idle == [(young_a, 20)]
    assert b.idle == []


def test_expire_idle_with_nothing_expired_changes_nothing():
    state = pool(idle_timeout=30)
    idle_connection(state, 0, "c")
    assert state.expire_idle(29) == []
    assert counts(state) == "0 active, 1 idle, 0 connecting, 0 queued"


# --- Limits: max_connections, then wait, then refuse ----------------------------------------


def test_beyond_max_connections_requests_wait_then_are_refused_at_max_queue():
    state = pool(max_connections=2, max_queue=2)
    open_connection(state, 0, "c1")
    assert state.checkout(0).action == CONNECT  # still connecting: counts too
    assert counts(state) == "1 active, 0 idle, 1 connecting, 0 queued"
    for waiter in ("w1", "w2"):
        assert state.checkout(0).action == WAIT
        state.waiters.append(waiter)  # the shell queues the waiter
    assert state.checkout(0).action == REFUSE
    assert counts(state) == "1 active, 0 idle, 1 connecting, 2 queued"


def test_max_queue_zero_refuses_at_once():
    state = pool(max_connections=1, max_queue=0)
    open_connection(state, 0, "c1")
    assert state.checkout(0).action == REFUSE


def test_idle_connections_count_towards_max_connections():
    state = pool(max_connections=1)
    conn, _ = idle_connection(state, 0, "c1")
    assert state.total == 1
    decision = state.checkout(1)
    assert (decision.action, decision.connection) == (REUSE, conn)


def test_when_full_an_idle_connection_of_another_server_is_reused():
    state = pool((("a", 80), ("b", 80)), max_connections=1)
    conn, a = idle_connection(state, 0, "on-a")  # round robin now points at b
    decision = state.checkout(1)
    assert (decision.action, decision.server, decision.connection) == (REUSE, a, conn)
    assert counts(state) == "1 active, 0 idle, 0 connecting, 0 queued"


def test_when_full_a_down_server_idle_connection_is_not_reused():
    state = pool((("a", 80), ("b", 80)), max_connections=1, max_fails=1)
    _, a = idle_connection(state, 0, "on-a")
    state.record_failure(a, 0)
    assert state.checkout(1).action == WAIT


def test_expired_idle_connection_of_another_server_frees_its_slot():
    """Expired connections found during checkout leave the pool at once, so
    the slot they held is free for this very request: waiting for it would
    wait for nothing (no close will wake the waiter)."""
    state = pool((("a", 80), ("b", 80)), max_connections=1, idle_timeout=30)
    stale, _ = idle_connection(state, 0, "stale-on-a")  # round robin now points at b
    decision = state.checkout(100)
    assert decision.action == CONNECT
    assert state.take_expired() == [stale]
    assert counts(state) == "0 active, 0 idle, 1 connecting, 0 queued"


# --- fresh=True: the retry after a failure on a reused connection ---------------------------


def test_fresh_checkout_never_reuses_an_idle_connection():
    state = pool()
    idle_connection(state, 0, "c1")
    decision = state.checkout(1, fresh=True)
    assert decision.action == CONNECT
    assert counts(state) == "0 active, 1 idle, 1 connecting, 0 queued"


def test_fresh_checkout_waits_when_full_even_with_idle_connections():
    state = pool((("a", 80), ("b", 80)), max_connections=2)
    idle_connection(state, 0, "on-a")
    idle_connection(state, 0, "on-b")
    assert state.checkout(1, fresh=True).action == WAIT
    assert counts(state) == "0 active, 2 idle, 0 connecting, 0 queued"
