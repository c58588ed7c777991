"""The model manager: the catalogue, pulls through huggingface_hub, the sha256 a node may serve a file under.

A catalogue entry pins a Hugging Face repo, a revision, a file and (where someone has checked it) the file's
sha256. `pull` hands the transfer to `huggingface_hub.hf_hub_download` (its cache under `<cache>/hub`, its
progress bar, its resume of a dropped connection with HTTP Range, `HF_ENDPOINT` for a mirror), then hashes
the file itself: a file whose pinned sha256 differs is deleted and refused. A file whose sha256 nobody
pinned is trusted on first use: the hash verified at that first pull is recorded in
`<cache>/trusted-sha256.json` (and shown), and every later start must find the same bytes. `resolve_model`
gives the hash a node may advertise for a file; the engine refuses to load a file whose bytes hash to
anything else (`verified_sha256`, the one place that compares).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tp_net.protocol.model_identity import catalogue_entries
from tp_node.gguf_header import ModelError

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
HASH_CHUNK_BYTES = 1024 * 1024
PART_SUFFIX = ".part"
HUB_DIR_NAME = "hub"  # huggingface_hub's own cache layout, under the model cache
TRUSTED_FILE_NAME = "trusted-sha256.json"  # sha256 recorded at the first pull of an unpinned file
TINY_MODEL_ID = "tiny"  # `tp-node models tiny`: the generated test model, no network needed
TINY_MODEL_FILE_NAME = "tiny.gguf"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verified_sha256(path: Path, expected: str | None) -> str:
    """The file's sha256, which must be `expected` when that is known: a node never serves (nor advertises)
    a file under a hash its bytes do not have."""
    actual = file_sha256(path)
    if expected is not None and actual != expected:
        raise ModelError(
            f"{path}: sha256 {actual} is not the expected {expected}; refusing to serve it "
            f"(delete the file and pull it again)"
        )
    return actual


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "token.place" / "models"


def check_sha256(text: str) -> str:
    digest = text.strip().lower()
    if not SHA256_HEX.fullmatch(digest):
        raise ModelError(f"{text!r} is not a sha256 digest (64 hex digits)")
    return digest


def cached_path(cache_dir: Path, sha256: str, file_name: str) -> Path:
    return cache_dir / sha256 / file_name


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face repo at a revision (a commit hash pins it; a branch name follows it)."""

    repo: str
    revision: str
    file: str

    def __post_init__(self) -> None:
        if not REPO_ID.fullmatch(self.repo) or ".." in self.repo:
            raise ModelError(f"{self.repo!r} is not a Hugging Face repo id (OWNER/NAME)")
        if not REVISION.fullmatch(self.revision):
            raise ModelError(f"{self.revision!r} is not a revision (branch, tag or commit hash)")
        if not SAFE_FILE_NAME.fullmatch(self.file):
            raise ModelError(f"{self.file!r} is not a plain file name")

    @property
    def key(self) -> str:
        return f"{self.repo}@{self.revision}/{self.file}"


def parse_hub_url(url: str) -> tuple[str, HubFile]:
    """`https://HOST/OWNER/REPO/resolve/REVISION/FILE` (a Hub file page's download link): the endpoint and
    the file."""
    parts = urllib.parse.urlsplit(url)
    segments = urllib.parse.unquote(parts.path).strip("/").split("/")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ModelError(f"{url!r} is not an http:// or https:// URL")
    if len(segments) != 5 or segments[2] != "resolve":
        raise ModelError(f"{url!r} is not a Hugging Face file URL (https://HOST/OWNER/REPO/resolve/REV/FILE)")
    owner, name, _, revision, file = segments
    return f"{parts.scheme}://{parts.netloc}", HubFile(f"{owner}/{name}", revision, file)


# Catalogue.


@dataclass(frozen=True)
class CatalogueEntry:
    model_id: str
    hub: HubFile
    sha256: str | None  # None: not pinned; the first pull records what it verified (trust on first use)
    parameters: str
    quantisation: str
    context_length: int
    license: str

    @property
    def file_name(self) -> str:
        return self.hub.file


def load_catalogue() -> dict[str, CatalogueEntry]:
    return {entry["id"]: _entry(entry) for entry in catalogue_entries()}


def _entry(raw: dict[str, Any]) -> CatalogueEntry:
    sha256 = raw.get("sha256")
    return CatalogueEntry(
        model_id=raw["id"],
        hub=HubFile(raw["repo"], raw["revision"], raw["file"]),
        sha256=check_sha256(sha256) if sha256 else None,
        parameters=raw["parameters"],
        quantisation=raw["quantisation"],
        context_length=int(raw["context_length"]),
        license=raw["license"],
    )


# Trust on first use.


def trusted_sha256(cache_dir: Path, hub: HubFile) -> str | None:
    path = cache_dir / TRUSTED_FILE_NAME
    if not path.exists():
        return None
    recorded = json.loads(path.read_text()).get(hub.key)
    return check_sha256(recorded) if isinstance(recorded, str) else None


def _record_trusted(cache_dir: Path, hub: HubFile, sha256: str) -> None:
    path = cache_dir / TRUSTED_FILE_NAME
    records = json.loads(path.read_text()) if path.exists() else {}
    records[hub.key] = sha256
    part = path.with_name(path.name + PART_SUFFIX)
    part.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    part.replace(path)


# Pulls.


@dataclass(frozen=True)
class PulledModel:
    path: Path
    sha256: str
    first_use: bool  # True: nothing pinned this hash; it was recorded now


def _hub_path(hub: HubFile, cache_dir: Path, endpoint: str | None, *, local_only: bool) -> Path | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        path = hf_hub_download(
            hub.repo,
            hub.file,
            revision=hub.revision,
            cache_dir=cache_dir / HUB_DIR_NAME,
            endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None,
            local_files_only=local_only,
        )
    except LocalEntryNotFoundError:
        if local_only:
            return None
        raise ModelError(f"{hub.key}: the hub could not be reached and nothing is cached") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelError(f"pull of {hub.key} failed: {_first_line(exc)}") from exc
    assert isinstance(path, str)
    return Path(path)


def _forget(path: Path) -> None:
    """Delete a cached file: the snapshot's link and the blob it points to."""
    target = path.resolve()
    path.unlink(missing_ok=True)
    target.unlink(missing_ok=True)


def pull(hub: HubFile, pinned: str | None, cache_dir: Path, *, endpoint: str | None = None) -> PulledModel:
    """The file, from the cache or downloaded (huggingface_hub's progress bar on stderr), and verified:
    against `pinned`, else against the hash recorded at its first pull, else recorded now."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = _hub_path(hub, cache_dir, endpoint, local_only=False)
    assert path is not None
    expected = pinned or trusted_sha256(cache_dir, hub)
    try:
        sha256 = verified_sha256(path, expected)
    except ModelError:
        _forget(path)
        raise
    if expected is None:
        _record_trusted(cache_dir, hub, sha256)
    return PulledModel(path, sha256, first_use=expected is None)


def announce_first_use(pulled: PulledModel, hub: HubFile, stream: TextIO | None = None) -> None:
    if pulled.first_use:
        print(
            f"{hub.key}: sha256 {pulled.sha256}\n  no sha256 is pinned for this file: trusting it on first "
            f"use (recorded; later starts refuse other bytes). Compare it with the publisher's file page.",
            file=stream or sys.stderr,
        )


# --model.


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    sha256: str | None  # what the node may advertise for it; None: a local file, served under its own hash
    model_id: str | None = None  # a catalogue id names the model it serves; None: the file name


def resolve_model(
    text: str, cache_dir: Path, *, pull_missing: bool = True, endpoint: str | None = None
) -> ResolvedModel:
    """`--model` accepts a file path, a catalogue id (pulled first when it is not cached), or `tiny` (written
    by `tp-node models tiny`)."""
    path = Path(text).expanduser()
    if path.exists():
        return ResolvedModel(path, None)
    if text == TINY_MODEL_ID:
        written = sorted(cache_dir.glob(f"*/{TINY_MODEL_FILE_NAME}"))
        if written:
            return ResolvedModel(written[0], written[0].parent.name)
        raise ModelError(
            f"model {text!r} is not in {cache_dir}: run `tp-node models tiny` first (no network)"
        )
    entry = load_catalogue().get(text)
    if entry is None:
        raise ModelError(
            f"model file {path} does not exist (and {text!r} is not a catalogue id: `tp-node models list`)"
        )
    cached = _hub_path(entry.hub, cache_dir, endpoint, local_only=True)
    expected = entry.sha256 or trusted_sha256(cache_dir, entry.hub)
    if cached is not None and expected is not None:
        return ResolvedModel(cached, expected, text)  # the engine verifies the bytes as it loads them
    if not pull_missing:
        raise ModelError(f"model {text!r} is not in {cache_dir}: run `tp-node models pull {text}` first")
    pulled = pull(entry.hub, entry.sha256, cache_dir, endpoint=endpoint)
    announce_first_use(pulled, entry.hub)
    return ResolvedModel(pulled.path, pulled.sha256, text)


def model_argument(text: str) -> str:
    """`--model` as a config file keeps it: an existing file (or a .gguf path) made absolute, an id as is."""
    path = Path(text).expanduser()
    if path.exists() or path.suffix == ".gguf" or os.sep in text:
        return str(path.absolute())
    return text


def store_model(cache_dir: Path, file_name: str, write: Callable[[Path], object]) -> tuple[Path, str]:
    """Have `write` write a model file, then keep it in the cache as CACHE/SHA256/FILE (the folders are
    created); returns the path and the sha256."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    part = cache_dir / f"{file_name}{PART_SUFFIX}"
    write(part)
    sha256 = file_sha256(part)
    final = cached_path(cache_dir, sha256, file_name)
    final.parent.mkdir(parents=True, exist_ok=True)
    part.replace(final)
    return final, sha256


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
