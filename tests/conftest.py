"""Shared pytest fixtures."""

from __future__ import annotations

import os
import pathlib
import tempfile

import pytest
from hypothesis import settings

# CI runs must be reproducible: `make test` derandomizes hypothesis; `make fuzz` (TP_FUZZ_RANDOM=1)
# explores new inputs on every run.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("fuzz", derandomize=False, print_blob=True)
settings.load_profile("fuzz" if os.environ.get("TP_FUZZ_RANDOM") else "ci")


def _tiny_model_cache_dir(request: pytest.FixtureRequest) -> pathlib.Path:
    # The cache survives sessions; without the cacheprovider plugin fall back to a per-session dir.
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return pathlib.Path(cache.mkdir("tiny-model"))
    factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    return factory.mktemp("tiny-model")


@pytest.fixture(scope="session")
def tiny_model_path(request: pytest.FixtureRequest) -> pathlib.Path:
    """Path of the tiny random-weight llama GGUF (seed 0), cached across sessions."""
    # Imported here so tests that do not need the model run without the node extra.
    from tp_node.testing import tiny_model

    path = _tiny_model_cache_dir(request) / tiny_model.DEFAULT_FILE_NAME
    if path.exists():
        return path
    # Write beside the target, then rename: readers never see a half-written file.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    tmp_path = pathlib.Path(tmp_name)
    try:
        tiny_model.write_tiny_model(tmp_path)
        tmp_path.chmod(0o644)  # mkstemp makes it 0600; other tools may read the cached model.
        tmp_path.replace(path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path
