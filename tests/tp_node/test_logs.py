"""--log-format json: one JSON object per line, exceptions by class name only."""

from __future__ import annotations

import json
import logging

import pytest

from tp_cli.logs import JsonFormatter


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc else None
    return logging.LogRecord("tp_node.relay", logging.WARNING, __file__, 1, message, args, exc_info)


def test_a_record_is_one_json_line() -> None:
    line = JsonFormatter().format(record("link %d down", 7))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "link 7 down"
    assert (entry["level"], entry["logger"]) == ("warning", "tp_node.relay")
    assert entry["ts"].endswith("Z")


def test_an_exception_contributes_its_class_name_only() -> None:
    exc = ValueError("the prompt was: secret words")
    entry = json.loads(JsonFormatter().format(record("request failed", exc=exc)))
    assert entry["exception"] == "ValueError"
    assert "secret" not in json.dumps(entry)


def test_the_roles_accept_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from tp_node import relay_cli

    with pytest.raises(SystemExit):
        relay_cli.main(["--log-format", "xml"])
    assert "invalid choice: 'xml'" in capsys.readouterr().err
