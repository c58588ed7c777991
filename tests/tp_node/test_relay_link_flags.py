"""tp-relay's link-limit flags: defaults, overrides, and the link cap kept below the open-file limit."""

from __future__ import annotations

import resource

import pytest

from tp_net.protocol import link_limits
from tp_node import relay_cli


def limits_for(argv: list[str], monkeypatch: pytest.MonkeyPatch, fds: int) -> link_limits.LinkLimits:
    monkeypatch.setattr(resource, "getrlimit", lambda which: (fds, fds))
    return relay_cli._link_limits(relay_cli.build_parser().parse_args(argv))


def test_defaults_fit_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = limits_for([], monkeypatch, fds=1024)
    assert limits.links_per_address_max == link_limits.LINKS_PER_ADDRESS_MAX
    assert limits.links_max == 1024 - link_limits.FDS_RESERVED
    assert limits.idle_timeout_s == link_limits.LINK_IDLE_TIMEOUT_S
    assert limits_for([], monkeypatch, fds=10**6).links_max == link_limits.LINKS_MAX


def test_flags_override_but_never_pass_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["--links-per-address-max", "8", "--links-max", "5000", "--link-idle-timeout", "2.5"]
    limits = limits_for(argv, monkeypatch, fds=4096)
    assert (limits.links_per_address_max, limits.links_max, limits.idle_timeout_s) == (
        8,
        4096 - link_limits.FDS_RESERVED,
        2.5,
    )
    assert limits_for(["--links-max", "100"], monkeypatch, fds=4096).links_max == 100
