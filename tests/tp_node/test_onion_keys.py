import json
from pathlib import Path

import pytest

from tp_crypto.errors import KeyFileError
from tp_node.onion_keys import ONION_KEY_FILE, ONION_KEY_ROTATION_S, OnionKeyRing


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


def test_the_ring_survives_a_restart_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / ONION_KEY_FILE
    first = OnionKeyRing.load_or_create(path, 1000.0)
    assert path.stat().st_mode & 0o777 == 0o600
    again = OnionKeyRing.load_or_create(path, 2000.0)
    assert again.public_keys() == first.public_keys()
    assert again.private_keys() == first.private_keys()


def test_a_rotation_due_while_stopped_happens_at_load(tmp_path: Path) -> None:
    path = tmp_path / ONION_KEY_FILE
    old = OnionKeyRing.load_or_create(path, 0.0).public_keys()[0]
    later = OnionKeyRing.load_or_create(path, ONION_KEY_ROTATION_S + 1.0)
    assert later.public_keys()[0] != old and later.public_keys()[1] == old  # old one in its grace period
    assert OnionKeyRing.load_or_create(path, ONION_KEY_ROTATION_S + 2.0).public_keys() == later.public_keys()


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("not json", "malformed"),
        ("[]", "no key"),
        ('[{"private": "00", "public": "00", "created": 0}]', "not 32 bytes"),
        (json.dumps([{"private": "11" * 32, "public": "22" * 32, "created": 0}]), "does not match"),
    ],
)
def test_a_damaged_key_file_is_refused_by_name(tmp_path: Path, content: str, complaint: str) -> None:
    path = tmp_path / ONION_KEY_FILE
    path.write_text(content)
    with pytest.raises(KeyFileError, match=complaint) as raised:
        OnionKeyRing.load_or_create(path, 0.0)
    assert str(path) in str(raised.value)
