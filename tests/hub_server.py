"""A local stand-in for the Hugging Face Hub, for tests (nothing leaves 127.0.0.1).

`HubServer` is a small in-process HTTP server (stdlib `ThreadingHTTPServer` on 127.0.0.1, random port) speaking
the subset of the Hub's HTTP API that `huggingface_hub` 2.x - and through it `transformers` 5.x `from_pretrained` /
`push_to_hub` - uses to create repos, commit files and download them again. Repos live in memory; every commit gets
a fresh 40-hex sha and keeps a full snapshot of the tree, so old revisions keep resolving.

Endpoints (shown for model repos; `datasets/...` and `spaces/...` repos are handled the same way):

  GET  /api/whoami-v2                              `HfApi.whoami` (token check)
  POST /api/repos/create                           `create_repo`; 409 if it exists. A new repo gets an "initial
                                                   commit" with `.gitattributes`, like on the Hub, so `main` exists
  POST /api/validate-yaml                          README.md metadata check made by `create_commit`: always valid
  GET  /api/models/{repo_id}[/revision/{rev}]      `model_info` / `repo_info`: `sha`, `private`, `siblings`
                                                   (`size`/`blobId` with `?blobs=true`)
  GET  /api/models/{repo_id}/tree/{rev}[/{path}]   `list_repo_tree` / `list_repo_files` (`?recursive=true`)
  POST /api/models/{repo_id}/preupload/{rev}       upload mode of each file: always "regular" (see below)
  POST /api/models/{repo_id}/commit/{rev}          NDJSON commit: `header`, `file` (base64 or text), `deletedFile`,
                                                   `deletedFolder`, `lfsFile` (only for content already stored)
  POST /api/models/{repo_id}/branch/{branch}       `create_branch` (used by `push_to_hub(revision=...)`)
  HEAD|GET /{repo_id}/resolve/{rev}/{path}         downloads (`hf_hub_download`, `snapshot_download`,
                                                   `from_pretrained`): `X-Repo-Commit`, `ETag` (git blob sha1),
                                                   `Content-Length`; served directly, no redirect

Protocol choices:
  * No Xet, no LFS. The preupload answer is "regular" for every file, so the client - including the hf_xet
    "pipelined" `upload_folder` path taken when hf_xet is installed - sends every file, binaries included, base64
    encoded inside the commit NDJSON; no xet upload session is ever opened. No response carries `X-Xet-*` headers,
    a `xet-auth` link or `xetHash`, so downloads take the plain HTTP GET path.
  * Errors look like the Hub's (`X-Error-Code` / `X-Error-Message` headers + `{"error": ...}` body), so the client
    raises its usual exceptions: `RepoNotFound` -> `RepositoryNotFoundError`, `RevisionNotFound` ->
    `RevisionNotFoundError`, `EntryNotFound` -> `EntryNotFoundError` (404 on resolve also carries `X-Repo-Commit`,
    which the client uses to cache the file's absence).
  * Auth: `Authorization: Bearer <token>` is looked up in `HubServer.tokens` (token -> `HubUser`). An unknown token
    gets 401 on any request (message "Invalid credentials in Authorization header", as on the Hub); a write without
    a token gets 401; a write to a namespace that is neither the user's nor one of their orgs, or with a read-only
    token, gets 403. Private repos look missing (`RepoNotFound`) to everyone else.
  * Not implemented: pull requests (`create_pr=True` -> 400), tags, LFS/Xet transfers, paths-info, commit listing,
    deleting repos. Unknown routes answer 404 and are recorded in `server.requests` like every other request.

Pytest side: the `hub_server` fixture starts a server and points huggingface_hub / transformers at it for one test
(see `use_local_hub` for exactly what is patched); `hub_env(server)` gives the env vars a subprocess needs. For a
server shared by a whole module:

    @pytest.fixture(scope="module")
    def hub(tmp_path_factory):
        with HubServer() as server, pytest.MonkeyPatch.context() as mp:
            use_local_hub(server, mp, tmp_path_factory.mktemp("hf_home"))
            yield server
This module only imports the stdlib and pytest at import time: conftest imports it, and importing huggingface_hub
here would freeze its env-derived constants before conftest has set HF_HUB_OFFLINE.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import socket
import threading
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

# Users and tokens known to a default server.
USER, ORG, OTHER_USER = "test-user", "test-org", "other-user"
WRITE_TOKEN = "hf_local_test_write_token"  # test-user (member of test-org), write access
READ_TOKEN = "hf_local_test_read_token"  # test-user, read-only token
OTHER_TOKEN = "hf_local_test_other_user_token"  # other-user, write access to its own namespace only

GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
_TYPE_BY_URL_PART = {None: "model", "models": "model", "datasets": "dataset", "spaces": "space"}
_RECORDED_HEADERS = ("authorization", "content-type", "range", "user-agent")


@dataclass(frozen=True)
class HubUser:
    name: str
    orgs: tuple[str, ...] = ()
    can_write: bool = True  # False = read-only token

    def owns(self, namespace: str) -> bool:
        return namespace == self.name or namespace in self.orgs


DEFAULT_TOKENS = {
    WRITE_TOKEN: HubUser(USER, (ORG,)),
    READ_TOKEN: HubUser(USER, (ORG,), can_write=False),
    OTHER_TOKEN: HubUser(OTHER_USER),
}


@dataclass
class Commit:
    oid: str
    title: str
    description: str
    author: str
    parent: str | None
    date: str
    files: dict[str, bytes]  # full snapshot of the tree at this commit


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit oid
    history: dict[str, Commit] = field(default_factory=dict)  # oid -> commit, in creation order


@dataclass
class RecordedRequest:
    method: str
    path: str  # unquoted, without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased subset: authorization, content-type, range, user-agent
    status: int = 0


class HubError(Exception):
    """An error answered the way the Hub does: status + `X-Error-Code` / `X-Error-Message` + JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,  # extra JSON fields next to "error"
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, dict(headers or {})
        self.body = {"error": message, **(body or {})}

    def response(self) -> tuple[int, dict[str, str], bytes]:
        headers = {**self.headers, "Content-Type": "application/json", "X-Error-Message": self.message}
        if self.code:
            headers["X-Error-Code"] = self.code
        return self.status, headers, json.dumps(self.body).encode()


def git_sha1(data: bytes) -> str:
    """The git blob id of `data` (what the Hub uses as ETag / `oid` of regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() in ("1", "true")


def _json(obj: Any, status: int = 200) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()


@dataclass
class _Request:
    method: str
    args: dict[str, str | None]  # unquoted groups of the route pattern
    query: dict[str, list[str]]
    body: bytes
    user: HubUser | None

    @property
    def repo_type(self) -> str:
        return _TYPE_BY_URL_PART[self.args.get("type")]

    @property
    def repo_id(self) -> str:
        return self.args["repo"] or ""


_REPO = r"(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
_ROUTES = [  # (methods, full-match pattern on the raw path, handler)
    ("GET", r"/api/whoami-v2", "_api_whoami"),
    ("POST", r"/api/repos/create", "_api_create_repo"),
    ("POST", r"/api/validate-yaml", "_api_validate_yaml"),
    ("GET", rf"/api/{_REPO}(?:/revision/(?P<rev>[^/]+))?", "_api_repo_info"),
    ("GET", rf"/api/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "_api_tree"),
    ("POST", rf"/api/{_REPO}/preupload/(?P<rev>[^/]+)", "_api_preupload"),
    ("POST", rf"/api/{_REPO}/commit/(?P<rev>[^/]+)", "_api_commit"),
    ("POST", rf"/api/{_REPO}/branch/(?P<rev>[^/]+)", "_api_create_branch"),
    (
        "GET HEAD",
        r"/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
        "_resolve",
    ),
]


class HubServer:
    """In-memory Hub. Use as a context manager (or `start()` / `stop()`); `url` is its `HF_ENDPOINT`."""

    def __init__(self, tokens: Mapping[str, HubUser] | None = None, token: str = WRITE_TOKEN):
        self.tokens = dict(DEFAULT_TOKENS if tokens is None else tokens)
        self.token = token  # the token handed to clients by `use_local_hub` / `hub_env`
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []  # tracebacks of crashes inside the server itself (answered with 500)
        self.hf_home: Path | None = None  # set by `use_local_hub`
        self._repos: dict[tuple[str, str], Repo] = {}
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> HubServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.hub = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()  # stops serve_forever; then drop idle keep-alive connections
        for conn in list(self._httpd.open_connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()
        assert self._thread is not None
        self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- Python-side API (seeding and assertions) ----------------------------------------------------------------
    def create_repo(self, repo_id: str, *, private: bool = False, repo_type: str = "model") -> Repo:
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                raise HubError(409, f"You already created this {repo_type} repo: {repo_id}")
            repo = Repo(repo_type, repo_id, private, _now())
            self._repos[(repo_type, repo_id)] = repo
            owner = repo_id.split("/")[0]
            self._new_commit(repo, "main", {".gitattributes": GITATTRIBUTES}, "initial commit", "", owner)
            return repo

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes] | None = None,
        *,
        delete: Iterable[str] = (),
        message: str = "Upload files",
        branch: str = "main",
        repo_type: str = "model",
    ) -> str:
        """Commit directly (no HTTP), e.g. to seed a repo; returns the new sha."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            tree = dict(self._revision(repo, branch).files)
            for path in delete:
                del tree[path]
            tree.update(files or {})
            return self._new_commit(repo, branch, tree, message, "", repo_id.split("/")[0]).oid

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        with self._lock:
            return dict(self._revision(self._get_repo(repo_type, repo_id), revision).files)

    def commits(self, repo_id: str, repo_type: str = "model") -> list[Commit]:
        """All commits of the repo, newest first (like the Hub's commit listing)."""
        with self._lock:
            return list(reversed(self._get_repo(repo_type, repo_id).history.values()))

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        with self._lock:
            return self._get_repo(repo_type, repo_id)

    # -- storage helpers ---------------------------------------------------------------------------------------
    def _get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def _revision(self, repo: Repo, revision: str) -> Commit:
        if revision in repo.branches:
            return repo.history[repo.branches[revision]]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [commit for oid, commit in repo.history.items() if oid.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _new_commit(self, repo: Repo, branch: str, files: dict[str, bytes], title: str, description: str, author: str):
        with self._lock:
            parent = repo.branches.get(branch)
            seed = f"{next(self._counter)}\0{repo.repo_id}\0{parent}\0{title}\0" + ",".join(
                f"{path}:{git_sha1(data)}" for path, data in sorted(files.items())
            )
            commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), title, description, author, parent, _now(), files)
            repo.history[commit.oid] = commit
            repo.branches[branch] = commit.oid
            return commit

    # -- HTTP --------------------------------------------------------------------------------------------------
    def _handle_http(self, method: str, raw_path: str, query_string: str, headers: Any, body: bytes):
        record = RecordedRequest(
            method,
            unquote(raw_path),
            parse_qs(query_string),
            {k.lower(): v for k, v in headers.items() if k.lower() in _RECORDED_HEADERS},
        )
        with self._lock:
            self.requests.append(record)
        try:
            status, out_headers, payload = self._route(method, raw_path, record.query, headers, body)
        except HubError as error:
            status, out_headers, payload = error.response()
        except Exception as error:  # a bug in this stub: answer 500 and let the fixture fail the test
            self.errors.append(traceback.format_exc())
            status, out_headers, payload = HubError(500, f"local test Hub crashed: {error!r}").response()
        record.status = status
        return status, out_headers, payload

    def _route(self, method: str, raw_path: str, query: dict[str, list[str]], headers: Any, body: bytes):
        user = self._authenticate(headers.get("Authorization"))
        for methods, pattern, handler in _ROUTES:
            match = re.fullmatch(pattern, raw_path)
            if method in methods.split() and match:
                args = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                return getattr(self, handler)(_Request(method, args, query, body, user))
        raise HubError(404, f"The local test Hub does not implement {method} {raw_path}")

    def _authenticate(self, authorization: str | None) -> HubUser | None:
        if not authorization:
            return None
        user = self.tokens.get(authorization.removeprefix("Bearer ").strip())
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _readable_repo(self, req: _Request) -> Repo:
        repo = self._repos.get((req.repo_type, req.repo_id))
        hidden = repo is not None and repo.private and not (req.user and req.user.owns(req.repo_id.split("/")[0]))
        if repo is None or hidden:
            status = 401 if hidden and req.user is None else 404
            raise HubError(status, f"Repository not found: {req.repo_id}", "RepoNotFound")
        return repo

    def _check_write(self, user: HubUser | None, namespace: str, action: str) -> HubUser:
        if user is None:
            raise HubError(
                401, f"Unauthorized: {action} requires a token with write access, and the request carried no token"
            )
        if not user.can_write:
            raise HubError(403, f"You don't have the rights to {action}: the token of '{user.name}' is read-only")
        if not user.owns(namespace):
            raise HubError(
                403, f"You don't have the rights to {action}: '{user.name}' has no write access to '{namespace}'"
            )
        return user

    def _writable_repo(self, req: _Request, action: str) -> Repo:
        if _flag(req.query, "create_pr"):
            raise HubError(400, "Pull requests (create_pr=True) are not supported by the local test Hub")
        if req.user is None:  # do not even reveal whether the repo exists
            self._check_write(None, "", action)
        repo = self._readable_repo(req)
        self._check_write(req.user, req.repo_id.split("/")[0], action)
        return repo

    def _repo_url(self, repo: Repo) -> str:
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return f"{self.url}/{prefix}{repo.repo_id}"

    # -- endpoints ---------------------------------------------------------------------------------------------
    def _api_whoami(self, req: _Request):
        if req.user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        role = "write" if req.user.can_write else "read"
        return _json(
            {
                "type": "user",
                "id": hashlib.sha1(req.user.name.encode()).hexdigest()[:24],
                "name": req.user.name,
                "fullname": req.user.name,
                "orgs": [{"type": "org", "name": org, "roleInOrg": role} for org in req.user.orgs],
                "auth": {"type": "access_token", "accessToken": {"displayName": "local-test", "role": role}},
            }
        )

    def _api_create_repo(self, req: _Request):
        payload = json.loads(req.body or b"{}")
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization") or (req.user.name if req.user else "")
        repo_id = f"{namespace}/{payload['name']}"
        self._check_write(req.user, namespace, f"create a {repo_type} repo under '{namespace}'")
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        with self._lock:
            existing = self._repos.get((repo_type, repo_id))
            if existing is not None:  # the Hub's 409 carries the url: `create_repo(exist_ok=True)` reads it
                message = f"You already created this {repo_type} repo: {repo_id}"
                raise HubError(409, message, body={"url": self._repo_url(existing)})
            repo = self.create_repo(repo_id, private=private, repo_type=repo_type)
        return _json({"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def _api_validate_yaml(self, req: _Request):
        return _json({"errors": [], "warnings": []})

    def _api_repo_info(self, req: _Request):
        with self._lock:
            repo = self._readable_repo(req)
            commit = self._revision(repo, req.args["rev"] or "main")
        with_blobs = _flag(req.query, "blobs")
        siblings = [
            {"rfilename": path, **({"size": len(data), "blobId": git_sha1(data)} if with_blobs else {})}
            for path, data in sorted(commit.files.items())
        ]
        return _json(
            {
                "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
                "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0],
                "sha": commit.oid,
                "lastModified": commit.date,
                "createdAt": repo.created_at,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "usedStorage": sum(len(data) for data in commit.files.values()),
            }
        )

    def _api_tree(self, req: _Request):
        with self._lock:
            commit = self._revision(self._readable_repo(req), req.args["rev"] or "main")
        base = (req.args["path"] or "").strip("/")
        base = base + "/" if base else ""
        recursive = _flag(req.query, "recursive")
        files, folders = [], set()
        for path, data in sorted(commit.files.items()):
            if not path.startswith(base):
                continue
            parts = path[len(base) :].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folders.add(base + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                files.append({"type": "file", "oid": git_sha1(data), "size": len(data), "path": path})
        if base and not files and not folders:
            raise HubError(404, f"Path not found: {base.rstrip('/')}", "EntryNotFound")
        dirs = [
            {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
            for d in sorted(folders)
        ]
        return _json(dirs + files)

    def _api_preupload(self, req: _Request):
        with self._lock:
            repo = self._writable_repo(req, f"upload to {req.repo_id}")
            tree = self._revision(repo, req.args["rev"] or "main").files
        answers = [
            {
                "path": f["path"],
                "uploadMode": "regular",  # never "lfs": keeps uploads inline, no LFS / Xet transfer needed
                "shouldIgnore": False,
                "oid": git_sha1(tree[f["path"]]) if f["path"] in tree else None,
            }
            for f in json.loads(req.body)["files"]
        ]
        return _json({"files": answers})

    def _api_commit(self, req: _Request):
        ops = [json.loads(line) for line in req.body.decode().splitlines() if line.strip()]
        if not ops or ops[0].get("key") != "header":
            raise HubError(400, "A commit payload must start with a 'header' line")
        header, branch = ops[0]["value"], req.args["rev"] or "main"
        with self._lock:
            repo = self._writable_repo(req, f"commit to {req.repo_id}")
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch} (commits must target a branch)", "RevisionNotFound")
            head = repo.history[repo.branches[branch]]
            parent = header.get("parentCommit")
            if parent and not head.oid.startswith(parent):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(head.files)
            for op in ops[1:]:
                self._apply(repo, tree, op["key"], op["value"])
            commit = self._new_commit(
                repo, branch, tree, header.get("summary") or "", header.get("description") or "", req.user.name
            )
        return _json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._repo_url(repo)}/commit/{commit.oid}",
                "hookOutput": "",
            }
        )

    def _apply(self, repo: Repo, tree: dict[str, bytes], key: str, value: dict[str, Any]) -> None:
        path = value["path"]
        if key == "file":
            content = value["content"]
            tree[path] = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
        elif key == "deletedFile":
            if tree.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            doomed = [p for p in tree if p.startswith(path.rstrip("/") + "/")]
            if not doomed:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in doomed:
                del tree[p]
        elif key == "lfsFile":  # only for content already stored here (e.g. CommitOperationCopy of a file)
            known = {hashlib.sha256(d).hexdigest(): d for c in repo.history.values() for d in c.files.values()}
            if value["oid"] not in known:
                raise HubError(400, f"Unknown LFS object {value['oid']}: the local test Hub only stores inline files")
            tree[path] = known[value["oid"]]
        else:
            raise HubError(400, f"Unknown commit operation {key!r}")

    def _api_create_branch(self, req: _Request):
        payload = json.loads(req.body or b"{}")
        with self._lock:
            repo = self._writable_repo(req, f"create a branch in {req.repo_id}")
            branch = req.args["rev"] or ""
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: {branch}")
            repo.branches[branch] = self._revision(repo, payload.get("startingPoint") or "main").oid
        return _json({})

    def _resolve(self, req: _Request):
        with self._lock:
            commit = self._revision(self._readable_repo(req), req.args["rev"] or "main")
        data = commit.files.get(req.args["path"] or "")
        if data is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{git_sha1(data)}"',
        }
        return 200, headers, data  # for HEAD the handler sends the headers (incl. Content-Length) but no body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubServer

    def __init__(self, *args: Any, **kwargs: Any):
        self.open_connections: set[socket.socket] = set()
        super().__init__(*args, **kwargs)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every response carries a Content-Length
    timeout = 30  # an idle keep-alive connection is dropped after this many seconds
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.open_connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: requests are in `server.requests`
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        status, headers, payload = self.server.hub._handle_http(self.command, url.path, url.query, self.headers, body)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve


# -- pytest integration ----------------------------------------------------------------------------------------


def hub_env(server: HubServer, home: str | os.PathLike | None = None) -> dict[str, str]:
    """Env vars for a *subprocess* that must talk to `server`: `subprocess.run(..., env={**os.environ, **hub_env(s)})`.

    `home` becomes HF_HOME (cache in `{home}/hub`); defaults to the one set up by `use_local_hub`, if any.
    """
    env = {
        "HF_ENDPOINT": server.url,
        "HF_TOKEN": server.token,
        "HF_HUB_OFFLINE": "0",  # "0" rather than unset: a dict cannot unset what os.environ may hold
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_XET_TELEMETRY_ENABLED": "0",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    home = home if home is not None else server.hf_home
    if home is not None:
        env["HF_HOME"] = str(home)
        env["HF_HUB_CACHE"] = str(Path(home) / "hub")
    return env


def use_local_hub(server: HubServer, monkeypatch: pytest.MonkeyPatch, home: str | os.PathLike) -> None:
    """Point huggingface_hub and transformers (in this process) at `server`, with caches and token file under `home`.

    Both libraries read their env vars at import time, so besides the env (for code reading it at call time and for
    subprocesses) the derived module attributes are patched too. `monkeypatch` restores everything afterwards.
    """
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api as hf_api
    import huggingface_hub.utils._http as hf_http

    home = Path(home)
    server.hf_home = home
    cache = home / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    env = hub_env(server, home)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(name)
    for name in (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_OIDC_RESOURCE",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN",
        "HUGGINGFACE_CO_STAGING",
        "HF_TOKEN_PATH",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    endpoint = server.url
    for name, value in {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": frozenset(constants.HF_URL_HOSTS | {"127.0.0.1"}),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HUGGINGFACE_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),  # no stored token: "no token" really means none
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
    }.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    # The module-level `HfApi()` behind `huggingface_hub.create_repo`, `upload_folder`, ... captured the endpoint.
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    if hasattr(hf_http, "_HUB_ORIGINS"):  # origins trusted with the token when following redirects
        monkeypatch.setattr(hf_http, "_HUB_ORIGINS", hf_http._HUB_ORIGINS | {hf_http._url_origin(endpoint)})
    try:  # transformers caches one HfApi (built with the endpoint of the time) in `transformers.utils.hub._hf_api`
        import transformers.utils.hub as transformers_hub
    except ImportError:
        return
    if hasattr(transformers_hub, "_hf_api"):
        monkeypatch.setattr(transformers_hub, "_hf_api", None)


@pytest.fixture
def hub_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A running `HubServer` that huggingface_hub / transformers in this process talk to, as `test-user`."""
    with HubServer() as server:
        use_local_hub(server, monkeypatch, tmp_path / "hf_home")
        yield server
    if server.errors:
        pytest.fail("the local test Hub crashed while serving requests:\n" + "\n".join(server.errors))
