"""Skips that CI turns into failures.

A test that needs something this machine may lack (root and iproute2, systemd-analyze, chromium) skips with
the reason, unless the environment variable naming that need is "1": then the missing thing is a failure.
`.ci/run` installs what it can and sets every such variable, so in CI none of these tests can skip.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NoReturn

import pytest


def skip_unless_required(env: str, reason: str) -> NoReturn:
    """Skip for `reason`, or fail when `env` is "1" (the test must run here)."""
    if os.environ.get(env) == "1":
        pytest.fail(f"{env}=1 but {reason}")
    pytest.skip(reason)


def outcome_of(check: Callable[[], object]) -> tuple[str, str]:
    """("skipped" or "failed" or "passed", message) of a check that may call skip_unless_required.

    For the tests of such checks: a skip escaping a test would make it skipped, not red.
    """
    try:
        check()
    except pytest.skip.Exception as skipped:
        return "skipped", str(skipped)
    except pytest.fail.Exception as failed:
        return "failed", str(failed)
    return "passed", ""
