"""Release signatures: domain-separated Ed25519 over an artifact's sha256 digest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tp_crypto import signed
from tp_crypto.identity import Identity
from tp_crypto.release import (
    RELEASE_DOMAIN,
    ReleaseError,
    ReleaseSignature,
    decode_signature,
    file_digest,
    sign_digest,
    verify_release,
)

KEY = Identity(bytes(32))
DIGEST = "sha256:" + "ab" * 32


def test_a_signature_round_trips_and_verifies() -> None:
    signature = sign_digest(KEY, DIGEST)
    assert decode_signature(signature.encode()) == signature
    verify_release(signature, DIGEST, {KEY.node_id})


def test_a_file_digest_is_its_sha256(tmp_path: Path) -> None:
    wheel = tmp_path / "token_place-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK wheel bytes")
    assert file_digest(wheel) == "sha256:" + hashlib.sha256(b"PK wheel bytes").hexdigest()


def test_what_is_refused_and_why() -> None:
    signature = sign_digest(KEY, DIGEST)
    other = Identity(bytes(range(32)))
    with pytest.raises(ReleaseError, match="the artifact is sha256:cd"):
        verify_release(signature, "sha256:" + "cd" * 32, {KEY.node_id})
    with pytest.raises(ReleaseError, match="is not a trusted release key"):
        verify_release(signature, DIGEST, {other.node_id})
    forged = ReleaseSignature(KEY.node_id, DIGEST, bytes(64))
    with pytest.raises(ReleaseError, match="signature is invalid"):
        verify_release(forged, DIGEST, {KEY.node_id})


def test_a_signature_from_another_domain_does_not_pass() -> None:
    """The same key signing the same digest for another purpose (say, a descriptor) is no release."""
    elsewhere = signed.sign(KEY, b"relay descriptor", DIGEST.encode())
    with pytest.raises(ReleaseError, match="signature is invalid"):
        verify_release(ReleaseSignature(KEY.node_id, DIGEST, elsewhere), DIGEST, {KEY.node_id})
    assert signed.verify(KEY.node_id, RELEASE_DOMAIN, DIGEST.encode(), sign_digest(KEY, DIGEST).signature)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hello\n", "the first line must be"),
        ("token.place release signature v1\nkey 00\n", "exactly the lines key, digest, signature"),
        (sign_digest(KEY, DIGEST).encode().replace("key ", "key zz"), "must be hex"),
        (sign_digest(KEY, DIGEST).encode().replace("sha256:", "md5:"), "digest sha256:<64 hex>"),
        (sign_digest(KEY, DIGEST).encode() + "extra line\n", "exactly the lines"),
    ],
)
def test_malformed_signature_files_are_named(text: str, message: str) -> None:
    with pytest.raises(ReleaseError, match=message):
        decode_signature(text)


def test_only_sha256_digests_are_signed() -> None:
    with pytest.raises(ReleaseError, match="not a digest of the form"):
        sign_digest(KEY, "sha256:ABC")
