"""The model manager: a cache directory of verified GGUF files, the catalogue, and resumable downloads.

`pull` downloads a URL into `<cache>/<sha256>/<file name>`. Bytes go to `<file name>.part` first; an
interrupted transfer leaves the `.part` behind, and the next pull asks only for the rest (HTTP Range) and
hashes what it already has. Only a file whose sha256 matches the expected digest is renamed into place, so
a file at its final path has always been verified; on a mismatch the `.part` is deleted and nothing is
kept. The standard library is the only HTTP client (urllib follows Hugging Face's redirects to its CDN and
keeps the Range header on them).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from tp_node.gguf_header import ModelError

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
HASH_CHUNK_BYTES = 1024 * 1024
DOWNLOAD_CHUNK_BYTES = 256 * 1024
DOWNLOAD_TIMEOUT_S = 60.0
DOWNLOAD_ATTEMPTS = 5
RETRY_DELAY_S = 1.0
PROGRESS_INTERVAL_S = 0.2
PART_SUFFIX = ".part"
USER_AGENT = "token.place-node"
TINY_MODEL_ID = "tiny"  # `tp-node models tiny`: the generated test model, no network needed
TINY_MODEL_FILE_NAME = "tiny.gguf"

Progress = Callable[[int, int | None], None]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "token.place" / "models"


def check_sha256(text: str) -> str:
    digest = text.strip().lower()
    if not SHA256_HEX.fullmatch(digest):
        raise ModelError(f"{text!r} is not a sha256 digest (64 hex digits)")
    return digest


def file_name_of(url: str) -> str:
    """The last path segment of an http(s) URL, which must be a plain file name."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ModelError(f"{url!r} is not an http:// or https:// URL")
    name = urllib.parse.unquote(parts.path.rsplit("/", 1)[-1])
    if not SAFE_FILE_NAME.fullmatch(name):
        raise ModelError(f"{url!r} does not end in a usable file name")
    return name


def cached_path(cache_dir: Path, sha256: str, file_name: str) -> Path:
    return cache_dir / sha256 / file_name


# Catalogue.


@dataclass(frozen=True)
class CatalogueEntry:
    model_id: str
    url: str
    sha256: str | None  # None: not pinned yet; pull needs --sha256 from the publisher's file page
    parameters: str
    quantisation: str
    context_length: int
    license: str

    @property
    def file_name(self) -> str:
        return file_name_of(self.url)


def load_catalogue() -> dict[str, CatalogueEntry]:
    text = resources.files("tp_node").joinpath("catalogue.json").read_text()
    entries = json.loads(text)["models"]
    return {entry["id"]: _entry(entry) for entry in entries}


def catalogue_pins() -> dict[str, bytes]:
    """Model id -> GGUF sha256 of every catalogue entry whose digest is known: what the id stands for in any
    directory (tp_net.model_identity)."""
    return {e.model_id: bytes.fromhex(e.sha256) for e in load_catalogue().values() if e.sha256 is not None}


def _entry(raw: dict[str, Any]) -> CatalogueEntry:
    sha256 = raw.get("sha256")
    return CatalogueEntry(
        model_id=raw["id"],
        url=raw["url"],
        sha256=check_sha256(sha256) if sha256 else None,
        parameters=raw["parameters"],
        quantisation=raw["quantisation"],
        context_length=int(raw["context_length"]),
        license=raw["license"],
    )


def resolve_model(text: str, cache_dir: Path) -> Path:
    """`--model` accepts a file path, a catalogue id that was pulled into `cache_dir`, or `tiny` (written
    there by `tp-node models tiny`)."""
    path = Path(text).expanduser()
    if path.exists():
        return path
    if text == TINY_MODEL_ID:
        written = sorted(cache_dir.glob(f"*/{TINY_MODEL_FILE_NAME}"))
        if written:
            return written[0]
        raise ModelError(
            f"model {text!r} is not in {cache_dir}: run `tp-node models tiny` first (no network)"
        )
    entry = load_catalogue().get(text)
    if entry is None:
        raise ModelError(f"model file {path} does not exist (and {text!r} is not a catalogue id)")
    for candidate in sorted(cache_dir.glob(f"*/{entry.file_name}")):
        if entry.sha256 is None or candidate.parent.name == entry.sha256:
            return candidate
    raise ModelError(f"model {text!r} is not in {cache_dir}: run `tp-node models pull {text}` first")


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


# Downloads.


def _open(url: str, offset: int) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S)
    return response


def _resume_offset(response: http.client.HTTPResponse, offset: int) -> int:
    """Where the response's body starts in the file: `offset` for a matching 206, 0 for a full 200."""
    if response.status == 200:
        return 0
    content_range = response.headers.get("Content-Range", "")
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", content_range.strip())
    if response.status != 206 or match is None or int(match.group(1)) != offset:
        raise ModelError(f"the server answered a range request with {response.status} {content_range!r}")
    return offset


def _total_size(response: http.client.HTTPResponse, start: int) -> int | None:
    length = response.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


class _Download:
    """The bytes of `url` into `part`, resuming from what `part` holds; hashed as they arrive."""

    def __init__(self, url: str, part: Path, progress: Progress) -> None:
        self.url = url
        self.part = part
        self.progress = progress

    def _hash_existing(self, length: int) -> Any:
        digest = hashlib.sha256()
        with self.part.open("rb") as stream:
            while length and (chunk := stream.read(min(HASH_CHUNK_BYTES, length))):
                digest.update(chunk)
                length -= len(chunk)
        return digest

    def once(self) -> Any:
        """Fetch what `part` lacks; returns the sha256 object of the whole file."""
        offset = self.part.stat().st_size if self.part.exists() else 0
        try:
            with _open(self.url, offset) as response:
                start = _resume_offset(response, offset)
                total = _total_size(response, start)
                digest = self._hash_existing(start) if start else hashlib.sha256()
                with self.part.open("r+b" if start else "wb") as out:
                    out.truncate(start)
                    out.seek(start)
                    done = self._copy(response, out, digest, start, total)
                    out.flush()
                    os.fsync(out.fileno())
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the response's socket
            if exc.code == 416 and offset:  # the part is as long as the file, or longer: start over
                self.part.unlink()
            raise
        if total is not None and done != total:
            raise http.client.IncompleteRead(b"", total - done)
        return digest

    def _copy(self, response: BinaryIO, out: BinaryIO, digest: Any, done: int, total: int | None) -> int:
        while chunk := response.read(DOWNLOAD_CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            self.progress(done, total)
        return done

    def with_retries(self, attempts: int, delay_s: float) -> Any:
        for attempt in range(1, attempts + 1):
            try:
                return self.once()
            except urllib.error.HTTPError as exc:
                if exc.code < 500 and exc.code not in (408, 416, 429):
                    raise ModelError(f"download of {self.url} failed: HTTP {exc.code} {exc.reason}") from exc
                failure: Exception = exc
            except (OSError, http.client.HTTPException) as exc:
                failure = exc
            if attempt == attempts:
                kept = (
                    f"; {self.part} keeps the bytes received: pull again to resume"
                    if self.part.exists()
                    else ""
                )
                raise ModelError(f"download of {self.url} failed ({_describe(failure)}){kept}") from failure
            time.sleep(delay_s)
        raise ModelError(f"download of {self.url}: no attempts allowed")


def pull(
    url: str,
    sha256: str,
    cache_dir: Path,
    *,
    progress: Progress = lambda done, total: None,
    attempts: int = DOWNLOAD_ATTEMPTS,
    retry_delay_s: float = RETRY_DELAY_S,
) -> Path:
    """Download `url` into the cache unless a verified copy is there; returns the verified file's path."""
    expected = check_sha256(sha256)
    target = cached_path(cache_dir, expected, file_name_of(url))
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + PART_SUFFIX)
    actual = _Download(url, part, progress).with_retries(attempts, retry_delay_s).hexdigest()
    if actual != expected:
        part.unlink()
        raise ModelError(
            f"sha256 mismatch for {url}: expected {expected}, got {actual}; the download was deleted"
        )
    part.replace(target)
    return target


def _describe(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return exc.__class__.__name__


class ProgressBar:
    """`done/total` as a bar on a terminal (stderr), redrawn at most every PROGRESS_INTERVAL_S."""

    def __init__(self, stream: TextIO, label: str, width: int = 30) -> None:
        self._stream = stream
        self._label = label
        self._width = width
        self._started = time.monotonic()
        self._last_draw = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._last_draw < PROGRESS_INTERVAL_S and done != total:
            return
        self._last_draw = now
        rate = done / max(now - self._started, 1e-6)
        if total:
            filled = self._width * done // total
            bar = "#" * filled + "-" * (self._width - filled)
            text = f"{self._label} [{bar}] {100 * done / total:5.1f}% {_mb(done)}/{_mb(total)}"
        else:
            text = f"{self._label} {_mb(done)}"
        self._stream.write(f"\r{text} {_mb(rate)}/s ")
        self._stream.flush()

    def close(self) -> None:
        self._stream.write("\n")
        self._stream.flush()


def _mb(count: float) -> str:
    return f"{count / 1e6:.1f} MB"
