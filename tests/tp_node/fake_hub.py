"""A local stand-in for the Hugging Face Hub: what `hf_hub_download` asks of it, on 127.0.0.1.

HEAD and GET of `/OWNER/REPO/resolve/REVISION/FILE`, answered with the headers huggingface_hub reads
(`X-Repo-Commit`, `ETag`, `Content-Length`) and HTTP Range on GET. A revision is the repo's commit hash or
`main` (which names the same commit). `cut_after` hangs up mid-body, once per listed GET, to test resume.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tp_node.models import HubFile

RESOLVE_PATH = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/([^/?]+)")


@dataclass
class FakeHub:
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (repo, file): bytes
    commits: dict[str, str] = field(default_factory=dict)  # repo: its commit hash
    cut_after: list[int] = field(default_factory=list)  # per GET, in order: bytes sent before hanging up
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    endpoint: str = ""

    def add(self, hub: HubFile, body: bytes) -> None:
        self.files[(hub.repo, hub.file)] = body
        self.commits[hub.repo] = hub.revision if re.fullmatch(r"[0-9a-f]{40}", hub.revision) else "f" * 40

    def gets(self) -> list[str | None]:
        """The Range header of each file GET (huggingface_hub also asks /api/ routes, answered 404)."""
        return [ranged for method, path, ranged in self.requests if method == "GET" and "/resolve/" in path]


class _Handler(http.server.BaseHTTPRequestHandler):
    hub: FakeHub

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def _answer(self, *, send_body: bool) -> None:
        hub = self.hub
        hub.requests.append((self.command, self.path, self.headers.get("Range")))
        match = RESOLVE_PATH.fullmatch(self.path)
        body = hub.files.get((match.group(1), match.group(3))) if match else None
        commit = hub.commits.get(match.group(1)) if match else None
        if match is None or body is None or match.group(2) not in ("main", commit):
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if send_body and ranged:
            start = int(ranged.group(1))
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", str(commit))
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if not send_body:
            return
        cut = hub.cut_after.pop(0) if hub.cut_after else None
        self.wfile.write(body[start:] if cut is None else body[start : start + cut])
        if cut is not None:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # hang up mid-transfer
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_fake_hub(hub: FakeHub) -> Iterator[FakeHub]:
    handler = type("BoundHandler", (_Handler,), {"hub": hub})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    hub.endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield hub
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
