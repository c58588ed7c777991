"""Signing releases (`python -m bootstrap.release`) and checking them (`tp-relay verify`, exit 0/1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootstrap import release
from tp_crypto.identity import load_key_file
from tp_node import relay_cli

IMAGE = "sha256:" + "5e" * 32


@pytest.fixture
def release_key(tmp_path: Path) -> tuple[Path, str]:
    key_file = tmp_path / "release.key"
    assert release.main(["keygen", "--out", str(key_file)]) == 0
    return key_file, load_key_file(key_file).node_id.hex()


def test_a_signed_wheel_verifies_and_an_altered_one_does_not(
    tmp_path: Path, release_key: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    key_file, public = release_key
    wheel = tmp_path / "token_place-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel contents")
    assert release.main(["sign", "--key", str(key_file), str(wheel)]) == 0
    signature = tmp_path / (wheel.name + ".sig")
    assert relay_cli.main(["verify", "--key", public, str(wheel), str(signature)]) == 0
    assert f"OK: {wheel}" in capsys.readouterr().out
    wheel.write_bytes(b"wheel contents, altered")
    assert relay_cli.main(["verify", "--key", public, str(wheel), str(signature)]) == 1
    assert "INVALID" in capsys.readouterr().err


def test_a_container_digest_verifies_with_the_key_from_the_config_file(
    tmp_path: Path, release_key: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    key_file, public = release_key
    signature = tmp_path / "relay-image.sig"
    assert release.main(["sign", "--key", str(key_file), IMAGE, "--out", str(signature)]) == 0
    config = tmp_path / "relay.toml"
    config.write_text(f'release_key = ["{public}"]\n')
    assert relay_cli.main(["verify", "--config", str(config), IMAGE, str(signature)]) == 0
    other = "sha256:" + "00" * 32
    assert relay_cli.main(["verify", "--config", str(config), other, str(signature)]) == 1
    assert f"the signature is for {IMAGE}" in capsys.readouterr().err


def test_an_untrusted_or_missing_key_is_invalid(
    tmp_path: Path, release_key: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    key_file, _ = release_key
    signature = tmp_path / "image.sig"
    assert release.main(["sign", "--key", str(key_file), IMAGE, "--out", str(signature)]) == 0
    assert relay_cli.main(["verify", "--key", "11" * 32, IMAGE, str(signature)]) == 1
    assert "is not a trusted release key" in capsys.readouterr().err
    assert relay_cli.main(["verify", IMAGE, str(signature)]) == 1
    assert "no trusted release key" in capsys.readouterr().err
    assert relay_cli.main(["verify", "--key", "11" * 32, IMAGE, str(tmp_path / "gone.sig")]) == 1
    assert "No such file or directory" in capsys.readouterr().err


def test_signing_a_digest_needs_an_output_file(
    release_key: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        release.main(["sign", "--key", str(release_key[0]), IMAGE])
    assert "signing a digest needs --out FILE" in capsys.readouterr().err
