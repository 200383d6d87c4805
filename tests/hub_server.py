"""A loopback Hugging Face Hub for tests: real HTTP, the endpoints huggingface_hub's client calls.

The server (stdlib :class:`http.server.ThreadingHTTPServer` in a thread) keeps repos in memory as
git-like histories (commits holding full file trees, branches pointing at commits) and implements
what ``HfApi.create_repo``, ``create_branch``, ``upload_folder`` / ``create_commit`` (README
metadata validation, preupload, ndjson commit), ``repo_info`` / ``model_info``, ``list_repo_tree``,
``hf_hub_download`` and ``snapshot_download`` use:

=======================================================  ===========================================
``POST /api/repos/create``                               create a repo (409 when it exists)
``POST /api/models/{repo}/branch/{branch}``              create a branch
``POST /api/validate-yaml``                              parse a README's YAML front matter
``POST /api/models/{repo}/preupload/{rev}``              upload modes: always ``"regular"`` (inline)
``POST /api/models/{repo}/commit/{rev}``                 ndjson commit with base64 files
``GET  /api/models/{repo}[/revision/{rev}]``             repo info with ``sha`` and ``siblings``
``GET  /api/models/{repo}/tree/{rev}[/{path}]``          file listing (``recursive``)
``HEAD/GET /{repo}/resolve/{rev}/{path}``                file, ETag, X-Repo-Commit, Content-Length
=======================================================  ===========================================

Errors carry the headers the client maps to its exceptions (``X-Error-Code: RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``). Writes need ``Authorization: Bearer <token>`` with a
token of :attr:`HubServer.tokens`; private repos are invisible (401 RepoNotFound) without one.
LFS/Xet are not implemented: preupload answers ``regular`` for every file, so the client sends
contents inline in the commit, and an ``lfsFile`` operation is refused.

Use the ``hub`` fixture (:func:`hub_fixture`; import it into a test module) or
:func:`point_client_at` to aim the real client at the server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

__all__ = [
    "TOKEN",
    "USER",
    "Commit",
    "HubServer",
    "Repo",
    "hub_fixture",
    "hub_server_fixture",
    "point_client_at",
]

TOKEN = "hf_loopback_test_token"
"""The write token the fixture server accepts."""
USER = "tester"
"""The user that :data:`TOKEN` belongs to (namespace of repo ids given without one)."""

_REPO = r"(?P<repo>[^/]+/[^/]+)"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub returns as a regular file's ETag / oid)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    """One commit: its id, parent, message and the full file tree at that point."""

    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    """A model repo: commits by id and branches (name -> commit id)."""

    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """The commit a branch name or a full commit id points at."""
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)

    def commit(self, branch: str, message: str, files: dict[str, bytes]) -> Commit:
        parent = self.branches.get(branch)
        seed = f"{self.repo_id}\0{parent}\0{message}\0{len(self.commits)}\0".encode()
        seed += b"".join(p.encode() + git_blob_sha1(d).encode() for p, d in sorted(files.items()))
        commit = Commit(hashlib.sha1(seed).hexdigest(), parent, message, dict(files))
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit


class _HTTPError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, commit: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # ------------------------------------------------------------------ plumbing
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        token = auth[len("Bearer ") :]
        user = self.server.hub.tokens.get(token)
        if user is None:
            raise _HTTPError(401, "Invalid credentials in Authorization header")
        return user

    def _dispatch(self) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        body = self._body() if self.command == "POST" else b""
        with hub.lock:
            hub.requests.append((self.command, path))
        try:
            for method, pattern, handler in _ROUTES:
                if method == self.command or (method == "GET" and self.command == "HEAD"):
                    match = re.fullmatch(pattern, path)
                    if match:
                        params = {
                            k: unquote(v) for k, v in match.groupdict().items() if v is not None
                        }
                        with hub.lock:
                            handler(self, params, query, body)
                        return
            with hub.lock:
                hub.unhandled.append((self.command, path))
            raise _HTTPError(404, f"loopback hub: no route for {self.command} {path}")
        except _HTTPError as exc:
            headers = {"X-Error-Message": exc.message}
            if exc.code:
                headers["X-Error-Code"] = exc.code
            if exc.commit:
                headers["X-Repo-Commit"] = exc.commit
            self._json(exc.status, {"error": exc.message}, headers)

    do_GET = do_HEAD = do_POST = _dispatch

    # ------------------------------------------------------------------ helpers
    def _repo(self, repo_id: str, *, write: bool = False) -> Repo:
        user = self._user()
        repo = self.server.hub.repos.get(repo_id)
        if write and user is None:
            raise _HTTPError(401, "You must be authenticated to write to a repo", "RepoNotFound")
        if repo is None or (repo.private and user is None):
            raise _HTTPError(
                401 if user is None else 404, f"Repository {repo_id} not found", "RepoNotFound"
            )
        return repo

    @staticmethod
    def _commit(repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _base(self) -> str:
        return self.server.hub.url

    # ------------------------------------------------------------------ endpoints
    def create_repo(self, params: dict, query: dict, body: bytes) -> None:
        user = self._user()
        if user is None:
            raise _HTTPError(401, "You must be authenticated to create a repo")
        payload = json.loads(body or b"{}")
        if payload.get("type", "model") not in (None, "model"):
            raise _HTTPError(400, "loopback hub: only model repos are supported")
        repo_id = f"{payload.get('organization') or user}/{payload['name']}"
        hub = self.server.hub
        if (
            repo_id in hub.repos
        ):  # the Hub answers 409 with the url (create_repo(exist_ok=True) reads it)
            message = "You already created this model repo"
            self._json(
                409,
                {"error": message, "url": f"{self._base()}/{repo_id}"},
                {"X-Error-Message": message},
            )
            return
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = Repo(repo_id, private)
        repo.commit(
            "main",
            "initial commit",
            {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
        )
        hub.repos[repo_id] = repo
        self._json(200, {"url": f"{self._base()}/{repo_id}", "name": repo_id, "id": repo_id})

    def create_branch(self, params: dict, query: dict, body: bytes) -> None:
        repo = self._repo(params["repo"], write=True)
        branch = params["rev"]
        if branch in repo.branches:
            raise _HTTPError(409, f"Reference already exists: refs/heads/{branch}")
        start = json.loads(body or b"{}").get("startingPoint") or "main"
        repo.branches[branch] = self._commit(repo, start).oid
        self._json(200, {})

    def validate_yaml(self, params: dict, query: dict, body: bytes) -> None:
        content = json.loads(body)["content"]
        match = re.match(r"^---\r?\n(.*?)\r?\n---", content, re.DOTALL)
        if match:
            try:
                meta = yaml.safe_load(match.group(1))
            except yaml.YAMLError as exc:
                self._json(400, {"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []})
                return
            if meta is not None and not isinstance(meta, dict):
                self._json(
                    400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []}
                )
                return
        self._json(200, {"errors": [], "warnings": []})

    def preupload(self, params: dict, query: dict, body: bytes) -> None:
        repo = self._repo(params["repo"], write=True)
        commit = repo.resolve(params["rev"])
        files = json.loads(body)["files"]
        answer = []
        for item in files:
            existing = commit.files.get(item["path"]) if commit else None
            answer.append(
                {
                    "path": item["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(existing) if existing is not None else None,
                }
            )
        self._json(200, {"files": answer, "commitOid": commit.oid if commit else None})

    def commit(self, params: dict, query: dict, body: bytes) -> None:
        repo = self._repo(params["repo"], write=True)
        branch = params["rev"]
        if query.get("create_pr"):
            raise _HTTPError(501, "loopback hub: pull requests are not implemented")
        if branch not in repo.branches:
            raise _HTTPError(404, f"Invalid rev id: {branch} (not a branch)", "RevisionNotFound")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HTTPError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        head = repo.branches[branch]
        if header.get("parentCommit") and header["parentCommit"] != head:
            raise _HTTPError(412, "A commit has happened since parentCommit. Please retry.")
        files = dict(repo.commits[head].files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    raise _HTTPError(400, f"unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise _HTTPError(404, "A file with this name doesn't exist", "EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(prefix)}
            elif key == "lfsFile":
                raise _HTTPError(
                    400, "loopback hub: LFS uploads are not implemented (files go inline)"
                )
            else:
                raise _HTTPError(400, f"unknown commit operation {key!r}")
        commit = repo.commit(branch, header.get("summary", ""), files)
        self.server.hub.commit_payloads.append(lines)
        self._json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._base()}/{repo.repo_id}/commit/{commit.oid}",
                "pullRequestUrl": None,
            },
        )

    def repo_info(self, params: dict, query: dict, body: bytes) -> None:
        repo = self._repo(params["repo"])
        commit = self._commit(repo, params.get("rev", "main"))
        self._json(
            200,
            {
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "author": repo.repo_id.split("/")[0],
                "sha": commit.oid,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "lastModified": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            },
        )

    def tree(self, params: dict, query: dict, body: bytes) -> None:
        repo = self._repo(params["repo"])
        commit = self._commit(repo, params["rev"])
        base = params.get("path", "").strip("/")
        prefix = base + "/" if base else ""
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries: dict[str, dict] = {}
        for path, data in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(
                        folder,
                        {
                            "type": "directory",
                            "path": folder,
                            "oid": hashlib.sha1(folder.encode()).hexdigest(),
                        },
                    )
            if recursive or len(parts) == 1:
                entries[path] = {
                    "type": "file",
                    "path": path,
                    "size": len(data),
                    "oid": git_blob_sha1(data),
                }
        if base and not entries:
            raise _HTTPError(404, f"{base} does not exist", "EntryNotFound", commit.oid)
        self._json(200, list(entries.values()))

    def resolve(self, params: dict, query: dict, body: bytes) -> None:
        repo = self._repo(params["repo"])
        commit = self._commit(repo, params["rev"])
        data = commit.files.get(params["path"])
        if data is None:
            raise _HTTPError(404, f"{params['path']} not found", "EntryNotFound", commit.oid)
        headers = {
            "ETag": f'"{git_blob_sha1(data)}"',
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "bytes",
        }
        status = 200
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged:
            start = int(ranged.group(1))
            end = int(ranged.group(2)) if ranged.group(2) else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        self._send(status, data, headers, content_type="application/octet-stream")


_ROUTES = [
    ("POST", r"/api/repos/create", _Handler.create_repo),
    ("POST", r"/api/validate-yaml", _Handler.validate_yaml),
    ("POST", rf"/api/models/{_REPO}/branch/(?P<rev>[^/]+)", _Handler.create_branch),
    ("POST", rf"/api/models/{_REPO}/preupload/(?P<rev>[^/]+)", _Handler.preupload),
    ("POST", rf"/api/models/{_REPO}/commit/(?P<rev>[^/]+)", _Handler.commit),
    ("GET", rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", _Handler.tree),
    ("GET", rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?", _Handler.repo_info),
    ("GET", rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve),
]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubServer


class HubServer:
    """The loopback Hub: :meth:`start` serves on ``127.0.0.1:<free port>`` in a daemon thread.

    Attributes:
        url: the endpoint (``http://127.0.0.1:PORT``) to give ``HF_ENDPOINT``.
        repos: repo id -> :class:`Repo`.
        tokens: token -> user name; :data:`TOKEN` -> :data:`USER` by default.
        requests: ``(method, path)`` of every request, in order.
        unhandled: requests no route matched (a test can assert it stays empty).
        commit_payloads: the parsed ndjson lines of every accepted commit.
    """

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.tokens: dict[str, str] = {TOKEN: USER}
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self.commit_payloads: list[list[dict]] = []
        self.lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> HubServer:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="loopback-hub",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The file tree of ``repo_id`` at ``revision``."""
        commit = self.repos[repo_id].resolve(revision)
        if commit is None:
            raise KeyError(f"{repo_id} has no revision {revision!r}")
        return commit.files


def point_client_at(url: str, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Aim huggingface_hub (this process, and child processes through the environment) at ``url``.

    Sets the environment variables before anything reads them and patches the constants that an
    already-imported ``huggingface_hub`` computed from them: endpoint, offline mode off, Xet off,
    telemetry off, and a private ``HF_HOME`` (cache, token files) under ``hf_home``.
    """
    from huggingface_hub import constants

    hf_home = Path(hf_home)
    env = {
        "HF_ENDPOINT": url,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_ENABLE_HF_TRANSFER"):
        monkeypatch.delenv(key, raising=False)
    patched = {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
    }
    for name, value in patched.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)


@pytest.fixture(name="hub_server")
def hub_server_fixture() -> Iterator[HubServer]:
    """A running :class:`HubServer` (stopped after the test)."""
    server = HubServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="hub")
def hub_fixture(
    hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> HubServer:
    """The loopback Hub with the huggingface_hub client pointed at it (:func:`point_client_at`)."""
    point_client_at(hub_server.url, tmp_path / "hf_home", monkeypatch)
    return hub_server


if __name__ == "__main__":  # pragma: no cover - manual exploration
    server = HubServer().start()
    print(f"loopback hub at {server.url} (token {TOKEN}); Ctrl-C to stop")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
