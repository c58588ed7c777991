"""Logging for the roles: text lines, or one JSON object per line (`--log-format json`) for log collectors.

Log calls in token.place carry counts, short node ids and error class names, never prompts, outputs or cell
bodies. The JSON form keeps it that way: an exception contributes its class name only, since an exception's
message or traceback could quote data it was handed.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from tp_cli.launch import LOG_FORMAT

LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
