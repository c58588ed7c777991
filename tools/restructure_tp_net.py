"""Split tp_net into a sans-IO protocol subpackage and a trio subpackage (issue 17), across the whole tree.

Dev tooling, run from the repository root: `python tools/restructure_tp_net.py [--dry-run]`.

- Every flat `tp_net/<name>.py` must be classified in MODULES (below); if one is not (a module added since),
  the script changes nothing, prints the unclassified ones and exits 1: add them to MODULES and run it again.
  The rule: a module that imports trio or awaits goes to `tp_net.trio`, any other to `tp_net.protocol`.
- It `git mv`s each module to its new home (the hop's trio edge moves out of tp_node too), writes the two
  subpackages' `__init__.py`, and rewrites every reference in tracked and untracked (not ignored) text files:
  dotted paths (`tp_net.codec`, imports, monkeypatch strings), `from tp_net import codec, streams` (split by
  subpackage), and file paths (`tp_net/codec.py`).
- It is idempotent: a module already moved is skipped and a rewritten reference no longer matches.
- A comment or docstring line the longer names push past ruff's line length has its last words carried to the
  next line of the same paragraph (a trailing comment moves above its code first). It then runs ruff's import
  sorting and formatter on the Python files it changed, and reports every reference to an old module it could
  not rewrite (exit 1 if there is one) and whatever ruff still finds.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tokenize
import tomllib
from pathlib import Path

PROTOCOL = "tp_net.protocol"
TRIO = "tp_net.trio"

# Flat tp_net modules by subpackage: `protocol` never imports trio nor awaits; `trio` does.
_PROTOCOL_MODULES = (
    "addresses",
    "bandwidth_weights",
    "bootstrap_config",
    "cells",
    "circuit_client",
    "circuit_hop",
    "codec",
    "descriptors",
    "directory",
    "document_scan",
    "errors",
    "extend_policy",
    "frames",
    "hop_outputs",
    "hop_states",
    "hop_streams",
    "inference_contract",
    "link",
    "link_limits",
    "liveness",
    "messages",
    "model_identity",
    "path_selection",
    "rate_limits",
    "relay_messages",
    "sealed",
    "stream_deadlines",
    "streams",
    "traffic_shaping",
    "ws_protocol",
)
_TRIO_MODULES = (
    "client",
    "directory_client",
    "host_resolution",
    "link_pump",
    "link_trio",
    "linkbench",
    "transport",
    "transport_memory",
    "transport_ws",
    "trio_util",
)

# Old dotted module -> new dotted module.
MODULES: dict[str, str] = {
    **{f"tp_net.{name}": f"{PROTOCOL}.{name}" for name in _PROTOCOL_MODULES},
    **{f"tp_net.{name}": f"{TRIO}.{name}" for name in _TRIO_MODULES},
    # The hop's trio edge, beside the client's.
    "tp_node.hop_runtime": f"{TRIO}.hop_runtime",
    "tp_node.services": f"{TRIO}.services",
}

SUBPACKAGE_DOCS = {
    PROTOCOL: (
        '"""The overlay protocol, sans-IO: frames and their codec, links, circuits (client and hop),\n'
        "streams, descriptors, the directory and path selection. Nothing here imports trio or awaits: bytes\n"
        'and events in, bytes and events out (tp_net.trio moves them)."""\n'
    ),
    TRIO: (
        '"""The trio edge of the overlay: transports, links and their pumps, the client (ClientLink) and\n'
        "the hop (HopRuntime, the services host). Every protocol decision is in tp_net.protocol; these\n"
        'modules move bytes and carry out the cores\' outputs."""\n'
    ),
}

_SELF = Path("tools/restructure_tp_net.py")
_NOT_A_MODULE_BEFORE = r"(?<![\w.])"  # tests.tp_net.x is a test module, not tp_net.x
_NOT_A_PATH_BEFORE = r"(?<![\w/.])"  # tests/tp_net/x.py likewise


def _path(module: str) -> Path:
    return Path(*module.split(".")).with_suffix(".py")


def unclassified() -> list[str]:
    """Flat tp_net modules the mapping does not place."""
    known = {old for old in MODULES if old.startswith("tp_net.")}
    return sorted(
        f"tp_net.{path.stem}"
        for path in Path("tp_net").glob("*.py")
        if path.name != "__init__.py" and f"tp_net.{path.stem}" not in known
    )


def move_modules(dry_run: bool) -> list[str]:
    done = []
    for package, doc in SUBPACKAGE_DOCS.items():
        init = _path(package).with_suffix("") / "__init__.py"
        if not init.exists():
            done.append(f"create {init}")
            if not dry_run:
                init.parent.mkdir(parents=True, exist_ok=True)
                init.write_text(doc)
                subprocess.run(["git", "add", str(init)], check=True)
    for old, new in MODULES.items():
        source, target = _path(old), _path(new)
        if not source.exists():
            continue  # moved already (or removed by another branch)
        if target.exists():
            raise SystemExit(f"both {source} and {target} exist: resolve by hand")
        done.append(f"git mv {source} {target}")
        if not dry_run:
            subprocess.run(["git", "mv", str(source), str(target)], check=True)
    return done


def _dotted_pattern() -> re.Pattern[str]:
    names = "|".join(re.escape(old) for old in sorted(MODULES, key=len, reverse=True))
    return re.compile(_NOT_A_MODULE_BEFORE + rf"({names})(?![\w])")


def _path_pattern() -> re.Pattern[str]:
    names = "|".join(re.escape(str(_path(old))) for old in sorted(MODULES, key=len, reverse=True))
    return re.compile(_NOT_A_PATH_BEFORE + rf"({names})(?![\w])")


_PATHS = {str(_path(old)): str(_path(new)) for old, new in MODULES.items()}
_NEW_NAMES = (PROTOCOL, TRIO, str(_path(PROTOCOL).with_suffix("")), str(_path(TRIO).with_suffix("")))
# `from tp_net import a, b` (one line, or parenthesized over several).
_FROM_PACKAGE = re.compile(
    r"^(?P<indent>[ \t]*)from (?P<package>tp_net|tp_node) import "
    r"(?:\((?P<group>[^)]*)\)|(?P<line>[^\n#]*?))[ \t]*(?P<comment>#[^\n]*)?$",
    re.MULTILINE,
)


def _imported_names(match: re.Match[str]) -> list[str]:
    text = match["group"] if match["group"] is not None else match["line"]
    text = "\n".join(line.split("#")[0] for line in text.split("\n"))
    return [name.strip() for name in text.replace("\n", " ").split(",") if name.strip()]


def _rewrite_from_package(match: re.Match[str]) -> str:
    indent, package = match["indent"], match["package"]
    if match["group"] is not None and "#" in match["group"]:
        return match[0]  # comments inside the parentheses: left alone, and reported (see leftovers)
    names = _imported_names(match)
    by_package: dict[str, list[str]] = {}
    for name in names:
        bare = name.split(" as ")[0].strip()
        new = MODULES.get(f"{package}.{bare}")
        home = new.rsplit(".", 1)[0] if new else package
        by_package.setdefault(home, []).append(name)
    if list(by_package) == [package]:
        return match[0]
    comment = f"  {match['comment']}" if match["comment"] else ""
    lines = [f"{indent}from {home} import {', '.join(items)}" for home, items in by_package.items()]
    return "\n".join(lines) + comment


def rewrite_text(text: str) -> str:
    text = _FROM_PACKAGE.sub(_rewrite_from_package, text)
    text = _dotted_pattern().sub(lambda m: MODULES[m[1]], text)
    return _path_pattern().sub(lambda m: _PATHS[m[1]], text)


def _line_length_max() -> int:
    with open("pyproject.toml", "rb") as file:
        return int(tomllib.load(file)["tool"]["ruff"]["line-length"])


def _prose_kinds(text: str) -> list[str | None]:
    """Per line: "comment" (a whole-line comment), "trailing" (code, then a comment), "doc" (a line of a
    docstring, which may be rewrapped) or None."""
    kinds: list[str | None] = [None] * (text.count("\n") + 1)
    starts_line = True
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            row = token.start[0] - 1
            if token.type == tokenize.COMMENT:
                kinds[row] = "comment" if not token.line[: token.start[1]].strip() else "trailing"
            elif token.type == tokenize.STRING and starts_line and token.string.endswith(('"""', "'''")):
                for line in range(row, token.end[0]):
                    kinds[line] = "doc"
            if token.type in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
                starts_line = True
            elif token.type != tokenize.COMMENT:
                starts_line = False
    except (tokenize.TokenError, SyntaxError):
        return [None] * len(kinds)
    return kinds


def _continues(line: str, prefix: str) -> bool:
    """Whether `line` goes on the paragraph whose lines start with `prefix`."""
    if not line.startswith(prefix):
        return False
    rest = line[len(prefix) :]
    return bool(rest) and not rest[0].isspace() and not re.match(r'(-|\*|\d+\.|"""|\'\'\'|\|)(\s|$)', rest)


def reflow(text: str, limit: int) -> str:
    """Carry the overflow of too-long comment and docstring lines to the next line of their paragraph."""
    lines = text.split("\n")
    kinds = _prose_kinds(text)
    touched = [any(name in line for name in _NEW_NAMES) for line in lines]  # lines this script lengthened
    index = 0
    while index < len(lines):
        line, kind = lines[index], kinds[index]
        if len(line) <= limit or kind is None or not touched[index] or "noqa" in line:
            index += 1
            continue
        if kind == "trailing":  # the comment moves to its own line above the code
            code, comment = line.split("#", 1) if line.count("#") == 1 else (line, "")
            if not comment:
                index += 1
                continue
            indent = code[: len(code) - len(code.lstrip())]
            lines[index : index + 1] = [f"{indent}# {comment.strip()}", code.rstrip()]
            kinds[index : index + 1] = ["comment", None]
            touched[index : index + 1] = [True, False]
            continue
        prefix = re.match(r"\s*#\s?" if kind == "comment" else r"\s*", line)
        assert prefix is not None
        cut = line.rfind(" ", len(prefix[0]) + 1, limit + 1)
        if cut <= len(prefix[0]):
            index += 1
            continue
        head, tail = line[:cut].rstrip(), line[cut + 1 :]
        continuation = prefix[0] if kind == "comment" or not head.lstrip().startswith(('"""', "'''")) else ""
        if kind == "doc" and not continuation:
            continuation = prefix[0]
        lines[index] = head
        following = index + 1
        if (
            following < len(lines)
            and kinds[following] == kind
            and _continues(lines[following], continuation)
            and not tail.rstrip().endswith(('"""', "'''"))
        ):
            lines[following] = continuation + tail + " " + lines[following][len(continuation) :]
            touched[following] = True
        else:
            lines.insert(following, continuation + tail)
            kinds.insert(following, kind)
            touched.insert(following, True)
        index += 1
    return "\n".join(lines)


def leftovers(text: str) -> list[str]:
    """References to an old module still in `text` (the lines)."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if _dotted_pattern().search(line) or _path_pattern().search(line):
            found.append(f"{number}: {line.strip()}")
    for match in _FROM_PACKAGE.finditer(text):
        names = {name.split(" as ")[0].strip() for name in _imported_names(match)}
        if any(f"{match['package']}.{name}" in MODULES for name in names):
            number = text.count("\n", 0, match.start()) + 1
            found.append(f"{number}: {match[0].strip().splitlines()[0]}")
    return found


def text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return [Path(name) for name in listed if Path(name) != _SELF and Path(name).is_file()]


def rewrite_tree(dry_run: bool) -> tuple[list[Path], dict[Path, list[str]]]:
    limit = _line_length_max()
    changed: list[Path] = []
    left: dict[Path, list[str]] = {}
    for path in text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        new = rewrite_text(text)
        if new != text and path.suffix == ".py":
            new = reflow(new, limit)
        if new != text:
            changed.append(path)
            if not dry_run:
                path.write_text(new, encoding="utf-8")
        remaining = leftovers(new)
        if remaining:
            left[path] = remaining
    return changed, left


def tidy(python_files: list[Path]) -> str:
    """Sort imports and format the changed Python files; returns what ruff still reports."""
    if not python_files:
        return ""
    names = [str(path) for path in python_files]
    ruff = [sys.executable, "-m", "ruff"]
    try:
        subprocess.run([*ruff, "check", "--quiet", "--select", "I", "--fix", *names], check=False)
        subprocess.run([*ruff, "format", "--quiet", *names], check=False)
        check = [*ruff, "check", "--quiet", *names]
        report = subprocess.run(check, check=False, capture_output=True, text=True)
    except OSError as error:
        return f"ruff did not run ({error}): sort imports and format by hand"
    return report.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
    args = parser.parse_args()
    if not Path("tp_net").is_dir() or not Path(".git").exists():
        print("run from the repository root", file=sys.stderr)
        return 2
    missing = unclassified()
    if missing:
        print("flat tp_net modules the mapping does not classify (add them to MODULES):", file=sys.stderr)
        for module in missing:
            print(f"  {module}", file=sys.stderr)
        return 1
    for step in move_modules(args.dry_run):
        print(step)
    changed, left = rewrite_tree(args.dry_run)
    for path in changed:
        print(f"rewrote {path}")
    status = 0
    if left:
        status = 1
        print("references to old modules not rewritten:", file=sys.stderr)
        for path, lines in left.items():
            for line in lines:
                print(f"  {path}:{line}", file=sys.stderr)
    if not args.dry_run:
        report = tidy([path for path in changed if path.suffix == ".py"])
        if report:
            print("ruff still reports (fix by hand):\n" + report, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
