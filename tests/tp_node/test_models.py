"""The model manager against a local HTTP server serving the tiny model: resume, verification, the CLI."""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tp_node import models_cli
from tp_node.gguf_header import ModelError
from tp_node.models import (
    PART_SUFFIX,
    ProgressBar,
    cached_path,
    file_name_of,
    load_catalogue,
    pull,
    resolve_model,
)

FILE = "tiny.gguf"


@dataclass
class Behaviour:
    body: bytes
    cut_after: list[int] = field(default_factory=list)  # per request, in order: bytes sent before hanging up
    honour_range: bool = True
    ranges: list[str | None] = field(default_factory=list)


class Handler(http.server.BaseHTTPRequestHandler):
    behaviour: Behaviour

    def do_GET(self) -> None:
        behaviour = self.behaviour
        behaviour.ranges.append(self.headers.get("Range"))
        if self.path != f"/models/{FILE}":
            self.send_error(404)
            return
        start = self._range_start(behaviour)
        if start is None:
            return
        body = behaviour.body[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header(
                "Content-Range", f"bytes {start}-{len(behaviour.body) - 1}/{len(behaviour.body)}"
            )
        self.end_headers()
        cut = behaviour.cut_after.pop(0) if behaviour.cut_after else None
        self.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # hang up mid-transfer
            self.close_connection = True

    def _range_start(self, behaviour: Behaviour) -> int | None:
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match is None or not behaviour.honour_range:
            return 0
        start = int(match.group(1))
        if start >= len(behaviour.body):
            self.send_error(416)
            return None
        return start

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server(tiny_model_path: Path) -> Iterator[tuple[Behaviour, str]]:
    behaviour = Behaviour(tiny_model_path.read_bytes())
    handler = type("BoundHandler", (Handler,), {"behaviour": behaviour})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield behaviour, f"http://127.0.0.1:{httpd.server_address[1]}/models/{FILE}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_pull_downloads_verifies_and_caches(server: tuple[Behaviour, str], tmp_path: Path) -> None:
    behaviour, url = server
    sha = digest(behaviour.body)
    seen: list[tuple[int, int | None]] = []
    path = pull(url, sha, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert path == cached_path(tmp_path, sha, FILE) == tmp_path / sha / FILE
    assert path.read_bytes() == behaviour.body
    assert seen[-1] == (len(behaviour.body), len(behaviour.body))
    assert list(path.parent.iterdir()) == [path]  # no .part left
    assert pull(url, sha.upper(), tmp_path) == path  # cached: no second transfer
    assert behaviour.ranges == [None]


def test_an_interrupted_transfer_is_resumed_by_the_next_pull(
    server: tuple[Behaviour, str], tmp_path: Path
) -> None:
    behaviour, url = server
    sha, cut = digest(behaviour.body), len(behaviour.body) // 3
    behaviour.cut_after = [cut]
    with pytest.raises(ModelError, match="keeps the bytes received: pull again to resume"):
        pull(url, sha, tmp_path, attempts=1)
    part = tmp_path / sha / (FILE + PART_SUFFIX)
    assert part.read_bytes() == behaviour.body[:cut]
    assert not (tmp_path / sha / FILE).exists()
    path = pull(url, sha, tmp_path, attempts=1)
    assert behaviour.ranges == [None, f"bytes={cut}-"]
    assert path.read_bytes() == behaviour.body
    assert not part.exists()


def test_one_pull_retries_and_resumes_on_its_own(server: tuple[Behaviour, str], tmp_path: Path) -> None:
    behaviour, url = server
    behaviour.cut_after = [1000, 5000]  # two hang-ups, then the rest
    path = pull(url, digest(behaviour.body), tmp_path, attempts=3, retry_delay_s=0)
    assert path.read_bytes() == behaviour.body
    assert behaviour.ranges == [None, "bytes=1000-", "bytes=6000-"]


def test_a_server_that_ignores_range_starts_the_file_over(
    server: tuple[Behaviour, str], tmp_path: Path
) -> None:
    behaviour, url = server
    behaviour.cut_after, behaviour.honour_range = [4000], False
    path = pull(url, digest(behaviour.body), tmp_path, attempts=2, retry_delay_s=0)
    assert path.read_bytes() == behaviour.body
    assert behaviour.ranges == [None, "bytes=4000-"]


def test_a_part_as_long_as_the_file_is_discarded_and_fetched_again(
    server: tuple[Behaviour, str], tmp_path: Path
) -> None:
    behaviour, url = server
    sha = digest(behaviour.body)
    part = tmp_path / sha / (FILE + PART_SUFFIX)
    part.parent.mkdir()
    part.write_bytes(b"x" * len(behaviour.body))  # complete but wrong: the server answers 416
    path = pull(url, sha, tmp_path, attempts=2, retry_delay_s=0)
    assert path.read_bytes() == behaviour.body
    assert behaviour.ranges == [f"bytes={len(behaviour.body)}-", None]


def test_a_sha256_mismatch_is_refused_and_nothing_is_kept(
    server: tuple[Behaviour, str], tmp_path: Path
) -> None:
    behaviour, url = server
    wrong = digest(b"some other file")
    with pytest.raises(ModelError, match=f"sha256 mismatch.*expected {wrong}, got {digest(behaviour.body)}"):
        pull(url, wrong, tmp_path)
    assert list((tmp_path / wrong).iterdir()) == []


def test_a_corrupt_resumed_part_fails_verification_and_is_deleted(
    server: tuple[Behaviour, str], tmp_path: Path
) -> None:
    behaviour, url = server
    sha = digest(behaviour.body)
    part = tmp_path / sha / (FILE + PART_SUFFIX)
    part.parent.mkdir()
    part.write_bytes(b"\0" * 100)  # not the first 100 bytes of the file
    with pytest.raises(ModelError, match="sha256 mismatch"):
        pull(url, sha, tmp_path)
    assert list(part.parent.iterdir()) == []
    assert pull(url, sha, tmp_path).read_bytes() == behaviour.body  # and the next pull starts clean


def test_http_errors_and_bad_arguments_are_named(server: tuple[Behaviour, str], tmp_path: Path) -> None:
    _, url = server
    sha = digest(b"x")
    with pytest.raises(ModelError, match="HTTP 404"):
        pull(url.replace(FILE, "other.gguf"), sha, tmp_path)
    with pytest.raises(ModelError, match="not a sha256"):
        pull(url, "abc", tmp_path)
    with pytest.raises(ModelError, match="not an http"):
        pull("file:///etc/passwd", sha, tmp_path)
    with pytest.raises(ModelError, match="usable file name"):
        pull("https://example.org/models/", sha, tmp_path)
    with pytest.raises(ModelError, match="Connection refused"):
        pull("http://127.0.0.1:9/tiny.gguf", sha, tmp_path, attempts=1)


def test_the_catalogue_names_real_instruct_ggufs() -> None:
    catalogue = load_catalogue()
    assert {"qwen2.5-1.5b-instruct-q4_k_m", "llama-3.2-1b-instruct-q4_k_m"} <= set(catalogue)
    for entry in catalogue.values():
        assert entry.url.startswith("https://huggingface.co/") and entry.file_name.endswith(".gguf")
        assert entry.quantisation == "Q4_K_M" and entry.context_length >= 32768


def test_resolve_model_accepts_a_path_or_a_pulled_catalogue_id(tmp_path: Path, tiny_model_path: Path) -> None:
    assert resolve_model(str(tiny_model_path), tmp_path) == tiny_model_path
    entry = load_catalogue()["qwen2.5-1.5b-instruct-q4_k_m"]
    with pytest.raises(ModelError, match=re.escape("tp-node models pull qwen2.5-1.5b-instruct-q4_k_m")):
        resolve_model(entry.model_id, tmp_path)
    cached = tmp_path / ("0" * 64) / entry.file_name
    cached.parent.mkdir()
    cached.write_bytes(b"GGUF")
    assert resolve_model(entry.model_id, tmp_path) == cached
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "nothing.gguf"), tmp_path)


def test_the_cli_pulls_with_a_progress_bar_on_stderr(
    server: tuple[Behaviour, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    behaviour, url = server
    sha = digest(behaviour.body)
    assert models_cli.main(["pull", url, "--sha256", sha, "--cache-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / sha / FILE)
    assert f"{FILE} [{'#' * 30}] 100.0%" in err
    assert models_cli.main(["pull", url, "--cache-dir", str(tmp_path)]) == 1
    assert "no sha256 to verify against" in capsys.readouterr().err
    assert models_cli.main(["pull", "qwen2.5-1.5b-instruct-q4_k_m", "--cache-dir", str(tmp_path)]) == 1
    assert "pass --sha256" in capsys.readouterr().err
    assert models_cli.main(["list", "--cache-dir", str(tmp_path)]) == 0
    assert "llama-3.2-1b-instruct-q4_k_m" in capsys.readouterr().out


def test_file_names_come_from_the_url_path_only() -> None:
    assert file_name_of("https://h.co/a/b/Model-Q4_K_M.gguf?download=true") == "Model-Q4_K_M.gguf"
    for bad in (
        "https://h.co/a/..",
        "https://h.co/a/%2e%2e",
        "https://h.co/a/.hidden",
        "https://h.co/a/x%2Fy",
    ):
        with pytest.raises(ModelError):
            file_name_of(bad)


def test_the_progress_bar_draws_without_a_known_size(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    bar = ProgressBar(sys.stderr, "m.gguf")
    bar(2_000_000, None)
    bar.close()
    assert "m.gguf 2.0 MB" in capsys.readouterr().err
