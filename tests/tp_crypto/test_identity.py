import os
import stat
from pathlib import Path

import pytest

from tp_crypto.errors import KeyFileError, RemoteProtocolError
from tp_crypto.identity import (
    KEY_FILE_HEADER,
    Identity,
    create_key_file,
    load_key_file,
    load_or_create_key_file,
    node_id_to_x25519,
    verify_signature,
)
from tp_crypto.noise import x25519_public


def test_key_file_is_created_private_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "identity.key"
    created = create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_file(path).node_id == created.node_id


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    create_key_file(path)
    with pytest.raises(KeyFileError, match="already exists"):
        create_key_file(path)


def test_load_or_create_is_stable(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    assert load_or_create_key_file(path).node_id == load_or_create_key_file(path).node_id


def test_missing_key_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.key"
    with pytest.raises(KeyFileError, match=r"nope\.key does not exist"):
        load_key_file(path)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "identity.key"
    create_key_file(path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_key_file(path)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a key\n00\n",
        f"{KEY_FILE_HEADER}\nzz\n",
        f"{KEY_FILE_HEADER}\n{'ab' * 31}\n",
        f"{KEY_FILE_HEADER}\n{'ab' * 32}\nextra\n",
    ],
)
def test_corrupt_key_file_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "identity.key"
    path.write_text(text)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match="corrupt"):
        load_key_file(path)


def test_binary_garbage_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(b"\xff\xfe\x00garbage")
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError):
        load_key_file(path)


def test_directory_as_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_key_file(tmp_path)


def test_x25519_keys_derived_from_identity_match() -> None:
    identity = Identity.generate()
    assert x25519_public(identity.x25519_private) == node_id_to_x25519(identity.node_id)


def test_invalid_node_id_is_a_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        node_id_to_x25519(b"\x00" * 31)


def test_signatures_verify_only_for_their_message_and_key() -> None:
    identity = Identity.generate()
    signature = identity.sign(b"descriptor")
    assert verify_signature(identity.node_id, b"descriptor", signature)
    assert not verify_signature(identity.node_id, b"descriptoR", signature)
    assert not verify_signature(Identity.generate().node_id, b"descriptor", signature)
    assert not verify_signature(identity.node_id, b"descriptor", signature[:-1])


def test_seed_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Identity(b"short")
