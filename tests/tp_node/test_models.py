"""The model manager against a local fake Hub serving the tiny model, through huggingface_hub's own code path:
pinned and unpinned (trust on first use) pulls, resume of a dropped transfer, refusals, the CLI."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tp_node.fake_hub import FakeHub, serve_fake_hub
from tp_node import models_cli
from tp_node.gguf_header import ModelError
from tp_node.llama_engine import ModelConfig, load_model
from tp_node.models import (
    TRUSTED_FILE_NAME,
    HubFile,
    load_catalogue,
    parse_hub_url,
    pull,
    resolve_model,
    trusted_sha256,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TINY = HubFile("token-place/tiny-test", COMMIT, "tiny-llama-v1.gguf")
UNPINNED = HubFile("someone/unpinned", "main", "model.gguf")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hub(tiny_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    fake = FakeHub()
    fake.add(TINY, tiny_model_path.read_bytes())
    fake.add(UNPINNED, tiny_model_path.read_bytes())
    with serve_fake_hub(fake):
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        yield fake


def test_the_catalogue_pins_the_tiny_test_model_as_the_generator_writes_it(tiny_model_path: Path) -> None:
    entry = load_catalogue()["tiny-test"]
    assert entry.hub == TINY
    assert entry.sha256 == digest(tiny_model_path.read_bytes())


def test_the_catalogue_names_real_instruct_ggufs_by_repo_revision_and_file() -> None:
    catalogue = load_catalogue()
    assert {"qwen2.5-1.5b-instruct-q4_k_m", "llama-3.2-1b-instruct-q4_k_m"} <= set(catalogue)
    for entry in catalogue.values():
        assert entry.hub.file.endswith(".gguf") and entry.hub.revision
        if entry.model_id != "tiny-test":
            assert entry.quantisation == "Q4_K_M" and entry.context_length >= 32768


def test_a_catalogue_id_is_pulled_through_the_hub_then_served_from_the_cache(
    hub: FakeHub, tmp_path: Path
) -> None:
    resolved = resolve_model("tiny-test", tmp_path)
    body = hub.files[(TINY.repo, TINY.file)]
    assert resolved.path.read_bytes() == body and resolved.sha256 == digest(body)
    assert hub.gets() == [None]
    assert resolve_model("tiny-test", tmp_path) == resolved  # cached: no second transfer
    assert hub.gets() == [None]
    assert trusted_sha256(tmp_path, TINY) is None  # pinned: nothing to record


def test_a_dropped_transfer_is_resumed_with_a_range_request(hub: FakeHub, tmp_path: Path) -> None:
    # huggingface_hub writes in 10 MiB chunks and resumes from the last whole chunk it wrote.
    big = HubFile("someone/big", "main", "big.gguf")
    body = bytes(range(256)) * (96 * 1024)  # 24 MiB
    hub.add(big, body)
    hub.cut_after = [12 * 1024 * 1024]
    pulled = pull(big, digest(body), tmp_path)
    assert pulled.path.read_bytes() == body
    assert hub.gets() == [None, f"bytes={10 * 1024 * 1024}-"]


def test_a_file_whose_bytes_differ_from_the_pin_is_deleted_and_refused(hub: FakeHub, tmp_path: Path) -> None:
    wrong = digest(b"some other file")
    with pytest.raises(ModelError, match=f"is not the expected {wrong}; refusing to serve it"):
        pull(TINY, wrong, tmp_path)
    assert [p for p in (tmp_path / "hub").rglob("*.gguf")] == []  # link and blob gone
    assert list((tmp_path / "hub").rglob("blobs/*")) == []


def test_an_unpinned_file_is_trusted_on_first_use_and_held_to_it(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = hub.files[(UNPINNED.repo, UNPINNED.file)]
    url = f"{hub.endpoint}/{UNPINNED.repo}/resolve/main/{UNPINNED.file}"
    assert models_cli.main(["pull", url, "--cache-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"sha256 {digest(body)}" in err and "trusting it on first use" in err
    assert json.loads((tmp_path / TRUSTED_FILE_NAME).read_text()) == {UNPINNED.key: digest(body)}
    # The branch moves to other bytes: the next pull of the same name is refused, not trusted again.
    hub.files[(UNPINNED.repo, UNPINNED.file)] = body[:-1] + b"\0"
    hub.commits[UNPINNED.repo] = "e" * 40
    assert models_cli.main(["pull", url, "--cache-dir", str(tmp_path)]) == 1
    assert f"is not the expected {digest(body)}; refusing" in capsys.readouterr().err


def test_the_engine_refuses_a_file_whose_bytes_differ_from_what_it_would_advertise(
    hub: FakeHub, tmp_path: Path
) -> None:
    resolved = resolve_model("tiny-test", tmp_path)
    blob = resolved.path.resolve()
    blob.write_bytes(blob.read_bytes()[:-1] + b"\1")  # tampered with in the cache after the pull
    again = resolve_model("tiny-test", tmp_path)
    with pytest.raises(ModelError, match="refusing to serve it"):
        load_model(ModelConfig(path=again.path, sha256=again.sha256, n_ctx=256))


def test_hub_errors_and_bad_names_are_one_line(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"pull of token-place/tiny-test@main/other.gguf failed"):
        pull(HubFile(TINY.repo, "main", "other.gguf"), None, tmp_path)
    with pytest.raises(ModelError, match="not a Hugging Face file URL"):
        parse_hub_url("https://example.org/models/x.gguf")
    with pytest.raises(ModelError, match="not a plain file name"):
        HubFile("a/b", "main", "../../etc/passwd")
    with pytest.raises(ModelError, match="not a catalogue id"):
        resolve_model("no-such-model", tmp_path)
    with pytest.raises(ModelError, match=re.escape("tp-node models pull tiny-test")):
        resolve_model("tiny-test", tmp_path, pull_missing=False)


def test_models_list_says_what_is_pinned_and_cached(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    resolve_model("tiny-test", tmp_path)
    assert models_cli.main(["list", "--cache-dir", str(tmp_path)]) == 0
    lines = {line.split(":")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "sha256 pinned; cached at" in lines["tiny-test"]
    assert "not pinned: the first pull records it; not pulled" in lines["qwen2.5-1.5b-instruct-q4_k_m"]


def test_a_pull_shows_huggingface_hubs_progress_bar(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TQDM_POSITION", "-1")  # as on a terminal (the bar shows only on a TTY otherwise)
    pull(TINY, None, tmp_path)
    err = capfd.readouterr().err
    assert TINY.file in err and "100%" in err
