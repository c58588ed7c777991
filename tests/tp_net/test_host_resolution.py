"""Relay hostnames are resolved (bounded) before the /16 rule compares them."""

from __future__ import annotations

from tests.tp_net.test_path_selection import relay
from tp_net.trio.host_resolution import HOSTNAMES_RESOLVED_MAX, relay_hostnames, resolve_relay_hosts


def test_only_hostnames_are_resolved_and_at_most_the_limit() -> None:
    relays = [relay(1, "10.1.0.1"), relay(2, "[2001:db8::1]"), relay(3, "Relay.Example")]
    assert relay_hostnames(relays) == ["relay.example"]
    many = [relay(n % 250, f"r{n}.example") for n in range(HOSTNAMES_RESOLVED_MAX + 5)]
    assert len(relay_hostnames(many)) == HOSTNAMES_RESOLVED_MAX


async def test_names_resolve_and_failures_are_left_out() -> None:
    resolved = await resolve_relay_hosts([relay(1, "localhost"), relay(2, "no-such-host.invalid")])
    assert resolved.get("localhost") in {"127.0.0.1", "::1"}
    assert "no-such-host.invalid" not in resolved
