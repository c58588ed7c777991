"""A descriptor flood against an authority (open admission): 20,000 fake, correctly signed relay descriptors
used to fill ACCEPTED_DESCRIPTORS_MAX, so that honest newcomers were refused for hours. Each relay now counts
in the share of its address's network (IPv4 /16) and of its declared family; a share holds at most
RELAYS_PER_SUBNET_MAX / RELAYS_PER_FAMILY_MAX relays, so the flood fills its own share and honest newcomers
are admitted.

A flood that claims addresses in thousands of /16s passes every share: reachability testing stops it. A new
relay waits in a bounded set (tp_node.admission_queue) until the authority reached its claimed address and
the peer proved the descriptor's id; only then does it count toward ACCEPTED_DESCRIPTORS_MAX. GPU nodes are
admitted once one of their home relays is, NODES_PER_HOME_RELAY_MAX per home relay.

Sans-IO (tp_node.authority_core) for the shares and the queue's rules, and the issue's 20,000 descriptors in
2,000 /16s into an authority core whose reachability dials (tp_node.reachability) go over real sockets: the
fakes claim multicast addresses (224.0.0.0/4: the kernel refuses a TCP connect at once, as a silent address
would after REACHABILITY_TIMEOUT_S), an honest newcomer listens on 127.0.0.1 and is admitted.
"""

from __future__ import annotations

import hashlib
import random

import pytest
import trio

from tests.tp_net.directory_factories import NETWORK, network_of, node_descriptor, relay_descriptor
from tp_crypto.identity import Identity
from tp_crypto.noise_primitives import generate_keypair
from tp_net.protocol.descriptors import SignedDescriptor, sign_descriptor
from tp_net.protocol.directory import DirectoryError
from tp_net.trio.transport_ws import WebSocketDialer, WebSocketListener
from tp_node.admission_queue import PENDING_RELAYS_MAX, PENDING_RELAYS_PER_SUBNET_MAX
from tp_node.authority_core import (
    ACCEPTED_DESCRIPTORS_MAX,
    NODES_PER_HOME_RELAY_MAX,
    RELAYS_PER_FAMILY_MAX,
    RELAYS_PER_SUBNET_MAX,
    Admission,
    AuthorityCore,
)
from tp_node.directory_service import DirectoryService
from tp_node.reachability import ReachabilityTester
from tp_node.relay import Relay

AUTHORITIES, TRUST = network_of(3, 2)
FLOOD = 20_000  # the issue's flood (make slow); make test floods QUICK_FLOOD, far past every share
QUICK_FLOOD = 1_000
FLOOD_SUBNETS = 2_000  # the issue's flood claims this many /16s
HONEST_NEWCOMERS = 20
NOW = 1_800_000_000


def relay(label: str, address: str, family: str = "", published: int = NOW - 60) -> SignedDescriptor:
    """A correctly signed relay descriptor (published at `published`) of an identity named by `label`."""
    who = Identity(hashlib.sha256(f"{NETWORK} {label}".encode()).digest())
    return sign_descriptor(who, relay_descriptor(who, address=address, family=family, published=published))


def flood(authority: AuthorityCore, descriptors: list[SignedDescriptor]) -> tuple[int, set[str]]:
    """Upload each; how many were accepted, and the reasons given for the rest."""
    accepted, reasons = 0, set()
    for signed in descriptors:
        try:
            accepted += authority.accept(signed, None, NOW) is not None
        except DirectoryError as exc:
            reasons.add(str(exc).split(" '")[0])  # the share's kind, without its key
    return accepted, reasons


def honest_newcomers() -> list[SignedDescriptor]:
    return [relay(f"honest {n}", f"ws://198.{18 + n}.7.1:7000/") for n in range(HONEST_NEWCOMERS)]


def core(*, check_reachability: bool = False) -> AuthorityCore:
    return AuthorityCore(
        AUTHORITIES[0], TRUST, period_s=3600, admission=Admission.OPEN, check_reachability=check_reachability
    )


def multicast(n: int, subnets: int) -> str:
    """An address in the n-th of `subnets` /16s of 224.0.0.0/4 (unreachable: no TCP to multicast)."""
    index = n % subnets
    return f"ws://{224 + index // 256}.{index % 256}.{n // subnets % 250}.{n % 250 + 1}:7000/"


def flood_of_one_network(size: int) -> None:
    authority = core()
    fakes = [relay(f"fake {n}", f"ws://203.0.{n // 250}.{n % 250 + 1}:7000/") for n in range(size)]
    accepted, reasons = flood(authority, fakes)
    assert accepted == RELAYS_PER_SUBNET_MAX
    assert reasons == {"descriptor refused: subnet"}
    newcomers, reasons = flood(authority, honest_newcomers())
    assert (newcomers, reasons) == (HONEST_NEWCOMERS, set())
    # A relay of the flood's network that is already held still republishes (an update is not a newcomer).
    republished = relay("fake 0", "ws://203.0.0.1:7000/", published=NOW - 30)
    assert authority.accept(republished, None, NOW) is not None


def test_the_flood_of_one_network_fills_its_share_and_honest_newcomers_are_admitted() -> None:
    flood_of_one_network(QUICK_FLOOD)


@pytest.mark.slow
def test_the_issues_flood_of_20000_fills_only_its_share() -> None:
    assert FLOOD >= ACCEPTED_DESCRIPTORS_MAX  # the size that used to fill the authority
    flood_of_one_network(FLOOD)


def test_a_flood_under_one_family_fills_the_family_share() -> None:
    authority = core()
    fakes = [
        relay(f"family fake {n}", f"ws://{n // 256 + 1}.{n % 256}.0.1:7000/", "big")
        for n in range(QUICK_FLOOD)
    ]
    accepted, reasons = flood(authority, fakes)
    assert accepted == RELAYS_PER_FAMILY_MAX
    assert reasons == {"descriptor refused: family"}
    assert flood(authority, honest_newcomers()) == (HONEST_NEWCOMERS, set())


@pytest.mark.parametrize("kind", ["subnet", "family"])
def test_a_share_frees_up_when_its_relays_expire(kind: str) -> None:
    authority = core()
    limit = RELAYS_PER_SUBNET_MAX if kind == "subnet" else RELAYS_PER_FAMILY_MAX
    family = "f" if kind == "family" else ""
    address = "ws://203.0.{}.1:7000/" if kind == "subnet" else "ws://10.{}.0.1:7000/"
    full = [relay(f"{kind} {n}", address.format(n), family) for n in range(limit + 1)]
    assert flood(authority, full)[0] == limit
    authority.forget_before(NOW + 10**6)  # all expired
    assert flood(authority, full[-1:])[0] == 1


# --- reachability ------------------------------------------------------------------------------------


def reachability_flood(size: int) -> None:
    """`size` fakes in FLOOD_SUBNETS /16s, then an honest newcomer while the flood goes on: the fakes only
    ever wait (bounded), none is admitted, the newcomer is admitted once its turn to be dialed comes."""
    authority = core(check_reachability=True)
    fakes = (relay(f"far fake {n}", multicast(n, FLOOD_SUBNETS)) for n in range(10**9))
    waiting_max = 0
    for _ in range(size):
        flood(authority, [next(fakes)])
        waiting_max = max(waiting_max, authority.queue.relays_waiting)
    assert authority.accepted_count == 0
    assert waiting_max == PENDING_RELAYS_MAX  # full, and never more
    newcomer = relay("reachable honest", "ws://198.51.100.1:7000/")
    assert authority.accept(newcomer, None, NOW) is None  # waits for its dial
    newcomer_id = newcomer.open(NOW).node_id
    for _ in range(PENDING_RELAYS_MAX):  # each round: 64 dials end, 64 more fakes arrive
        for node_id, _address in authority.queue.due(64):
            authority.reached(node_id, node_id == newcomer_id, NOW)
        flood(authority, [next(fakes) for _ in range(64)])
        if authority.accepted_count:
            break
    assert authority.accepted_count == 1 and authority.queue.relays_waiting <= PENDING_RELAYS_MAX
    assert authority.make_vote(NOW + 3600)  # the newcomer is in the vote, no fake is


def test_a_flood_across_thousands_of_subnets_only_waits_and_an_honest_newcomer_is_admitted() -> None:
    reachability_flood(PENDING_RELAYS_MAX + FLOOD_SUBNETS)


@pytest.mark.slow
def test_the_issues_flood_of_20000_in_2000_subnets_only_waits() -> None:
    reachability_flood(FLOOD)


def test_a_networks_waiting_share_is_bounded_and_an_unreachable_relay_is_dropped() -> None:
    authority = core(check_reachability=True)
    same = [relay(f"same {n}", f"ws://203.0.{n}.1:7000/") for n in range(PENDING_RELAYS_PER_SUBNET_MAX + 3)]
    accepted, reasons = flood(authority, same)
    assert (accepted, authority.queue.relays_waiting) == (0, PENDING_RELAYS_PER_SUBNET_MAX)
    assert reasons == {"descriptor refused: 4 relays of"}
    for node_id, _address in authority.queue.due(PENDING_RELAYS_PER_SUBNET_MAX):
        assert authority.reached(node_id, False, NOW) == []
    assert (authority.accepted_count, authority.queue.relays_waiting) == (0, 0)


def node(label: str, homes: tuple[bytes, ...]) -> SignedDescriptor:
    who = Identity(hashlib.sha256(f"{NETWORK} node {label}".encode()).digest())
    return sign_descriptor(who, node_descriptor(who, home_relays=homes, published=NOW - 60))


def test_a_node_is_admitted_with_its_home_relay_and_shares_it() -> None:
    authority = core(check_reachability=True)
    home, elsewhere = relay("home", "ws://198.51.100.1:7000/"), relay("gone", "ws://198.52.100.1:7000/")
    home_id, gone_id = home.open(NOW).node_id, elsewhere.open(NOW).node_id
    early = node("early", (home_id,))
    assert authority.accept(early, None, NOW) is None  # its home relay is not admitted yet: it waits
    assert authority.accept(home, None, NOW) is None
    assert authority.accept(elsewhere, None, NOW) is None
    stranded = node("stranded", (gone_id,))
    assert authority.accept(stranded, None, NOW) is None
    admitted = authority.reached(home_id, True, NOW)
    assert [h.signed for h in admitted] == [home, early]
    assert authority.reached(gone_id, False, NOW) == []
    assert authority.accepted_count == 2  # the home relay and its node; not the stranded node
    homed = [node(f"homed {n}", (home_id,)) for n in range(NODES_PER_HOME_RELAY_MAX + 3)]
    accepted, reasons = flood(authority, homed)
    assert accepted == NODES_PER_HOME_RELAY_MAX - 1  # `early` holds one place
    assert reasons == {"descriptor refused: home"}


def test_a_flood_of_nodes_with_made_up_home_relays_fills_only_the_waiting_room() -> None:
    authority = core(check_reachability=True)
    made_up = [node(f"made up {n}", (hashlib.sha256(b"%d" % n).digest(),)) for n in range(1_500)]
    assert flood(authority, made_up) == (0, set())
    assert authority.accepted_count == 0 and authority.queue.nodes_waiting == 1_024


async def test_over_real_sockets_the_flood_is_never_admitted_and_a_reachable_newcomer_is() -> None:
    await wire_flood(FLOOD_SUBNETS)


@pytest.mark.slow
async def test_over_real_sockets_the_issues_flood_of_20000_in_2000_subnets() -> None:
    await wire_flood(FLOOD)


async def wire_flood(size: int) -> None:
    """An authority whose reachability dials go over real sockets; `size` fakes in FLOOD_SUBNETS /16s are
    uploaded to its directory service (in-process: the dials are what is under test), then an honest relay
    listening on 127.0.0.1 and an impostor claiming the honest relay's address under another id."""
    honest_identity = Identity(hashlib.sha256(b"wire honest").digest())
    onion_private, onion_public = generate_keypair()
    authority = core(check_reachability=True)
    admitted: list[SignedDescriptor] = []
    tester = ReachabilityTester(
        authority,
        WebSocketDialer(),
        lambda signed, _invitation: admitted.append(signed),
        wall_clock=lambda: NOW,
    )
    service = DirectoryService(TRUST, authority=authority, uploaded=tester.wake, wall_clock=lambda: NOW)
    honest = Relay(honest_identity, [onion_private], dialer=WebSocketDialer(), rng=random.Random(1))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(honest.serve, WebSocketListener())
        nursery.start_soon(tester.run)
        waiting_max = 0
        for n in range(size):
            await upload(service, relay(f"wire fake {n}", multicast(n, FLOOD_SUBNETS)))
            waiting_max = max(waiting_max, authority.queue.relays_waiting)
        newcomer = sign_descriptor(
            honest_identity,
            relay_descriptor(
                honest_identity, address=address, onion_keys=(onion_public,), published=NOW - 60
            ),
        )
        await upload(service, newcomer)
        await upload(service, relay("impostor", address))  # the honest relay's address, not its id
        with trio.fail_after(60):
            while authority.queue.relays_waiting:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert waiting_max <= PENDING_RELAYS_MAX
    assert admitted == [newcomer] and authority.accepted_count == 1
    assert tester.dials == size + 2  # every fake was dialed once and dropped


async def upload(service: DirectoryService, signed: SignedDescriptor) -> None:
    request = {"op": "publish", "descriptor": signed.body, "signature": signed.signature}
    async for answer in service.handle(request):
        assert answer == {"ok": True}
