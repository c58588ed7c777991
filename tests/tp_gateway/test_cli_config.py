"""tp-gateway's settings: the same layers as the other roles (file < TP_GATEWAY_* < flags)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tp_cli.config import ConfigError, resolve
from tp_gateway import cli
from tp_net.protocol.traffic_shaping import COVER_CELLS_PER_S_MAX, COVER_STREAM_OFF, CoverStream


def test_the_gateway_reads_a_config_file_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('listen = "127.0.0.1:8100"\napi_key = "from-file"\nlog_format = "json"\n')
    args = resolve(cli.build_parser(), "gateway", ["--config", str(config)], environ={})
    assert (args.listen, args.api_key, args.log_format) == (("127.0.0.1", 8100), "from-file", "json")
    env = {"TP_GATEWAY_LISTEN": "127.0.0.1:8200"}
    args = resolve(cli.build_parser(), "gateway", ["--config", str(config), "--api-key", "flag"], environ=env)
    assert (args.listen, args.api_key) == (("127.0.0.1", 8200), "flag")


def test_a_bad_gateway_value_is_named(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('listen = "everywhere"\n')
    with pytest.raises(ConfigError, match="key 'listen': 'everywhere' is not HOST:PORT"):
        resolve(cli.build_parser(), "gateway", ["--config", str(config)], environ={})


def test_the_cover_stream_is_off_by_default_and_its_rate_is_bounded(tmp_path: Path) -> None:
    assert resolve(cli.build_parser(), "gateway", [], environ={}).cover_stream == COVER_STREAM_OFF
    args = resolve(cli.build_parser(), "gateway", ["--cover-stream", "0.1"], environ={})
    assert args.cover_stream == CoverStream(rate_cells_per_s=0.1)
    with pytest.raises((SystemExit, ConfigError)):
        resolve(cli.build_parser(), "gateway", ["--cover-stream", str(COVER_CELLS_PER_S_MAX * 2)], environ={})
