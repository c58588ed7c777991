"""One home for the sealed protocol's constants: the JS client's js/src/constants.generated.js is exactly what
tp_gateway.sealed_constants_js generates from Python now, and the JS source and the bundle the gateway serves
use it (no second copy of a bucket or limit written by hand)."""

from __future__ import annotations

import re
from pathlib import Path

from tp_gateway.sealed_constants_js import JS_CONSTANTS_PATH, constants, render

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_js_constants_are_what_python_generates() -> None:
    assert JS_CONSTANTS_PATH.read_text() == render(), (
        "js/src/constants.generated.js is out of date: run `make js`"
    )


def test_the_js_client_defines_none_of_them_itself() -> None:
    source = (ROOT / "js" / "src" / "sealed.js").read_text()
    assert 'from "./constants.generated.js"' in source
    # A literal of its own: `te.encode(C.INFO_LABEL)` derives from the generated one, and is fine.
    for name in constants():
        assert not re.search(rf"\b{name}\s*=\s*[-\d\[\"'`(]", source), f"sealed.js defines {name} itself"


def test_the_served_bundle_carries_the_generated_buckets() -> None:
    bundle = (ROOT / "tp_gateway" / "static" / "sealed.bundle.js").read_text()
    buckets = constants()["SEALED_REQUEST_BUCKETS_BYTES"]
    assert isinstance(buckets, list)
    assert re.search(r"\[\s*" + r",\s*".join(str(b) for b in buckets) + r"\s*\]", bundle)
