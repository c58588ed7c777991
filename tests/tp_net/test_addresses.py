"""The one address validator (tp_net.protocol.addresses) and the relay's extend policy
(tp_net.protocol.extend_policy)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tp_net.protocol.addresses import (
    ADDRESS_LENGTH_MAX,
    AddressError,
    RelayAddress,
    is_private_host,
    parse_address,
)
from tp_net.protocol.errors import DialError
from tp_net.protocol.extend_policy import ExtendPolicy
from tp_net.trio.transport_ws import parse_ws_address

RELAY_ID = b"r" * 32
OTHER_ID = b"o" * 32


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        ("ws://10.0.0.1:7000/", RelayAddress("10.0.0.1", 7000, "/")),
        ("ws://[2001:db8::1]:7000/", RelayAddress("2001:db8::1", 7000, "/")),
        ("ws://Relay.Example:80", RelayAddress("relay.example", 80, "/")),
        ("ws://relay-1.example.net:443/tp", RelayAddress("relay-1.example.net", 443, "/tp")),
    ],
)
def test_valid_addresses_parse(address: str, parsed: RelayAddress) -> None:
    assert parse_address(address) == parsed


@pytest.mark.parametrize(
    "address",
    [
        "ws://a..b:80/",  # IDNA: empty label (UnicodeError in the dialer before this check)
        "ws://10.0.0.1:7000/\u00e9",  # the request line is ASCII (UnicodeEncodeError)
        "ws://r\u00e9lay.example:7000/",
        "ws://relay.example:7000/a b",
        "ws://relay.example:7000/\r\nHost: evil",
        "ws://user@relay.example:7000/",
        "ws://relay.example:7000/?q=1",
        "ws://relay.example:7000/#f",
        "ws://relay.example:0/",
        "ws://relay.example:65536/",
        "ws://relay.example/",
        "ws://-relay.example:7000/",
        "ws://relay_1.example:7000/",
        "ws://" + "a" * 64 + ".example:7000/",
        "ws://127.1:7000/",  # resolvers read these as IPv4 (127.0.0.1): refused as host names
        "ws://0x7f.1:7000/",
        "ws://2130706433:7000/",
        "ws://[fe80::1%25eth0]:7000/",
        "ws://[10.0.0.1]:7000/",
        "ws://[relay.example]:7000/",
        "ws://2001:db8::1:7000/",
        "wss://relay.example:7000/",
        "mem://relay0",
        "",
        "ws://" + "a" * ADDRESS_LENGTH_MAX + ":7000/",
    ],
)
def test_invalid_addresses_are_refused(address: str) -> None:
    with pytest.raises(AddressError):
        parse_address(address)
    with pytest.raises(DialError):  # the dialer uses the same validator
        parse_ws_address(address)


def _parses_or_refuses(text: str) -> None:
    try:
        parsed = parse_address(text)
    except AddressError:
        return
    # Whatever passes is plain ASCII (IDNA and the HTTP request line cannot fail on it) and round-trips.
    url = parsed.url()
    url.encode("ascii")
    parsed.host.encode("idna")
    assert parse_address(url) == parsed


@given(st.text(max_size=300))
def test_any_text_parses_or_raises_address_error(text: str) -> None:
    _parses_or_refuses(text)


@given(st.text(alphabet="ws:/[]%.@?#0123456789abcdefx-\u00e9", max_size=40).map(lambda t: "ws://" + t))
def test_url_like_text_parses_or_raises_address_error(text: str) -> None:
    _parses_or_refuses(text)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.9.9.9",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "239.1.2.3",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "localhost",
        "relay.localhost",
    ],
)
def test_private_hosts(host: str) -> None:
    assert is_private_host(host)


@pytest.mark.parametrize("host", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "relay.example.net"])
def test_public_hosts(host: str) -> None:
    assert not is_private_host(host)


def _policy(listed: dict[bytes, str] | None, *, local: bool = False) -> ExtendPolicy:
    return ExtendPolicy(lambda: listed, local_network=local)


def test_policy_dials_the_listed_address_not_the_clients() -> None:
    policy = _policy({RELAY_ID: "ws://relay.example.net:7000/tp"})
    assert policy.dial_address(RELAY_ID, "ws://127.0.0.1:22/admin") == "ws://relay.example.net:7000/tp"
    assert policy.dial_address(RELAY_ID, None) == "ws://relay.example.net:7000/tp"


def test_policy_refuses_an_id_the_directory_does_not_list() -> None:
    policy = _policy({RELAY_ID: "ws://relay.example.net:7000/"})
    assert policy.dial_address(OTHER_ID, "ws://relay.example.net:7000/") is None


def test_policy_without_a_directory_refuses_outside_local_networks() -> None:
    assert _policy(None).dial_address(RELAY_ID, "ws://relay.example.net:7000/") is None


def test_policy_refuses_a_listed_private_address_outside_local_networks() -> None:
    listed = {RELAY_ID: "ws://10.0.0.5:7000/", OTHER_ID: "ws://localhost:7000/"}
    assert _policy(listed).dial_address(RELAY_ID, None) is None
    assert _policy(listed).dial_address(OTHER_ID, None) is None
    assert _policy(listed, local=True).dial_address(RELAY_ID, None) == "ws://10.0.0.5:7000/"


@pytest.mark.parametrize("listed", [None, {OTHER_ID: "ws://127.0.0.1:7002/"}])
def test_local_policy_dials_an_unlisted_relay_at_the_clients_address_at_the_root(
    listed: dict[bytes, str] | None,
) -> None:
    policy = _policy(listed, local=True)
    assert policy.dial_address(RELAY_ID, "ws://127.0.0.1:7001/admin/delete") == "ws://127.0.0.1:7001/"
    assert policy.dial_address(RELAY_ID, "ws://a..b:80/") is None
    assert policy.dial_address(RELAY_ID, "ws://127.0.0.1:7001/\u00e9") is None
    assert policy.dial_address(RELAY_ID, None) is None


def test_policy_refuses_a_listed_address_that_does_not_validate() -> None:
    assert _policy({RELAY_ID: "ws://a..b:80/"}).dial_address(RELAY_ID, None) is None
