from tp_node.onion_keys import OnionKeyRing


def test_keys_rotate_and_the_old_one_answers_during_its_grace() -> None:
    ring = OnionKeyRing(0, rotation_s=100, grace_s=30)
    first = ring.public_keys()[0]
    assert not ring.rotate_if_due(99)
    assert ring.rotate_if_due(100)
    assert len(ring.public_keys()) == 2 and ring.public_keys()[1] == first
    assert len(ring.private_keys()) == 2
    ring.rotate_if_due(129)
    assert ring.public_keys()[1] == first
    ring.rotate_if_due(130)
    assert ring.public_keys() == ring.public_keys()[:1] and first not in ring.public_keys()


def test_private_and_public_keys_match() -> None:
    from tp_crypto.noise import x25519_public

    ring = OnionKeyRing(0, rotation_s=10, grace_s=10)
    ring.rotate_if_due(10)
    assert tuple(x25519_public(k) for k in ring.private_keys()) == ring.public_keys()
