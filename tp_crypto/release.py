"""Release signatures: an Ed25519 release key signs the sha256 digest of an artifact.

An artifact is a file (a wheel, an sdist) or a container image, named by its registry digest. Both are
signed the same way: the signed body is the digest text `sha256:<64 hex>`, under the domain
"release artifact" (tp_crypto.signed), so no other token.place signature can pass for a release signature.
Signature files are short text, one `name value` pair per line after the header:

    token.place release signature v1
    key <release public key, 64 hex>
    digest sha256:<64 hex>
    signature <128 hex>
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from tp_crypto import signed
from tp_crypto.errors import TokenPlaceError
from tp_crypto.identity import NODE_ID_BYTES, SIGNATURE_BYTES, Identity

RELEASE_DOMAIN = b"release artifact"
SIGNATURE_HEADER = "token.place release signature v1"
SIGNATURE_FILE_BYTES_MAX = 4096
DIGEST_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
FIELDS = ("key", "digest", "signature")


class ReleaseError(TokenPlaceError):
    """A release signature is malformed, made by an untrusted key, or does not match the artifact."""


@dataclass(frozen=True)
class ReleaseSignature:
    key: bytes
    digest: str
    signature: bytes

    def encode(self) -> str:
        return (
            f"{SIGNATURE_HEADER}\nkey {self.key.hex()}\ndigest {self.digest}\n"
            f"signature {self.signature.hex()}\n"
        )


def is_digest(text: str) -> bool:
    return DIGEST_PATTERN.fullmatch(text) is not None


def file_digest(path: Path) -> str:
    with path.open("rb") as artifact:
        return "sha256:" + hashlib.file_digest(artifact, "sha256").hexdigest()


def sign_digest(identity: Identity, digest: str) -> ReleaseSignature:
    if not is_digest(digest):
        raise ReleaseError(f"{digest!r} is not a digest of the form sha256:<64 lowercase hex>")
    return ReleaseSignature(identity.node_id, digest, signed.sign(identity, RELEASE_DOMAIN, digest.encode()))


def decode_signature(text: str) -> ReleaseSignature:
    lines = text.strip("\n").split("\n")
    if len(text) > SIGNATURE_FILE_BYTES_MAX or not lines or lines[0] != SIGNATURE_HEADER:
        raise ReleaseError(f"not a release signature: the first line must be {SIGNATURE_HEADER!r}")
    fields = dict(line.partition(" ")[::2] for line in lines[1:])
    if sorted(fields) != sorted(FIELDS) or len(lines) != len(FIELDS) + 1:
        raise ReleaseError(f"a release signature has exactly the lines {', '.join(FIELDS)}")
    try:
        key, signature = bytes.fromhex(fields["key"]), bytes.fromhex(fields["signature"])
    except ValueError:
        raise ReleaseError("release signature: key and signature must be hex") from None
    if len(key) != NODE_ID_BYTES or len(signature) != SIGNATURE_BYTES or not is_digest(fields["digest"]):
        raise ReleaseError(
            f"release signature: key is {NODE_ID_BYTES} bytes, signature {SIGNATURE_BYTES} bytes, "
            "digest sha256:<64 hex>"
        )
    return ReleaseSignature(key, fields["digest"], signature)


def verify_release(signature: ReleaseSignature, digest: str, trusted: Collection[bytes]) -> None:
    """Returns when `signature` is a trusted key's signature of `digest`; ReleaseError says why not."""
    if signature.digest != digest:
        raise ReleaseError(f"the signature is for {signature.digest}, the artifact is {digest}")
    if signature.key not in trusted:
        raise ReleaseError(f"the signing key {signature.key.hex()} is not a trusted release key")
    if not signed.verify(signature.key, RELEASE_DOMAIN, digest.encode(), signature.signature):
        raise ReleaseError("the signature is invalid (forged, or altered after signing)")
