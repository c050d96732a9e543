"""A Hugging Face Hub-compatible HTTP server for the tests (loopback only, stdlib only).

It speaks the part of the Hub protocol that ``huggingface_hub`` 2.x and ``datasets`` use to
create repos, commit (regular and legacy-LFS files), read repo info, trees and paths, and
download files (HEAD/GET/Range); see ../shared/design/hub-protocol.md. Repos live in memory,
file contents in a folder on disk, addressed by sha256. Commits are all-or-nothing.

Test hooks: :meth:`HubServer.fail` makes the next matching requests fail (or drop, before or half-way), :meth:`tamper` serves
altered bytes for a file (storage corruption), :attr:`requests` logs every request, and
``tokens`` holds the accepted bearer tokens (needed to write, and to read private repos).

This module must not import ``huggingface_hub``: conftest imports it before setting HF_ENDPOINT.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs diff=lfs merge=lfs -text\n"
LFS_SUFFIXES = (".safetensors", ".parquet", ".png")
TYPES = {"datasets": "dataset", "models": "model", "spaces": "space"}


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass(frozen=True)
class Entry:
    """A file in a commit."""

    sha256: str
    size: int
    oid: str  # git blob sha1 (what the Hub reports for regular files)
    lfs: bool


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)  # branch or refs/pr/N -> commit
    commits: dict[str, dict[str, Entry]] = field(default_factory=dict)  # commit -> path -> entry
    parents: dict[str, str | None] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    pull_requests: int = 0


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer(ThreadingHTTPServer):
    """Bind at construction (so the URL is known early); :meth:`start` serves in a daemon thread."""

    daemon_threads = True

    def __init__(self, address=("127.0.0.1", 0)):
        super().__init__(address, _Handler)
        self.url = f"http://{self.server_address[0]}:{self.server_address[1]}"
        self.lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self.reset(None)

    # -- test controls -------------------------------------------------------------------------

    def start(self) -> "HubServer":
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve_forever, daemon=True)
            self._thread.start()
        return self

    def reset(self, storage: Path | None) -> None:
        """Forget every repo; keep file contents under ``storage``."""
        with self.lock:
            self.storage = None if storage is None else Path(storage)
            if self.storage is not None:
                self.storage.mkdir(parents=True, exist_ok=True)
            self.repos: dict[tuple[str, str], Repo] = {}
            self.tokens = {"hf_test_write"}
            self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range header
            self.faults: list[list] = []  # [method, path fragment, status, remaining]
            self.tampered: dict[tuple[str, str], bytes] = {}
            self._counter = itertools.count()

    def fail(self, method: str, fragment: str, status: int | None = 500, times: int = 1) -> None:
        """Answer the next ``times`` requests ``method`` whose path contains ``fragment`` with
        ``status``; ``None`` carries the request out, sends half of its answer, then drops the
        connection; ``0`` drops the connection before carrying anything out."""
        with self.lock:
            self.faults.append([method, fragment, status, times])

    def tamper(self, repo_id: str, path: str, data: bytes | None, repo_type: str = "dataset") -> None:
        """Serve ``data`` instead of the stored bytes of ``path`` (ETag unchanged); ``None`` undoes it."""
        with self.lock:
            if data is None:
                self.tampered.pop((repo_id, path), None)
            else:
                self.tampered[(repo_id, path)] = data

    def head(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> str | None:
        """The commit ``revision`` points to (``None`` when the repo or revision does not exist)."""
        repo = self.repos.get((repo_type, repo_id))
        return None if repo is None else repo.refs.get(revision)

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, bytes]:
        """Path -> stored bytes of every file at ``revision``."""
        repo = self.repos[(repo_type, repo_id)]
        return {p: self._blob(e.sha256) for p, e in repo.commits[repo.refs.get(revision, revision)].items()}

    # -- storage -------------------------------------------------------------------------------

    def _store(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self.storage / digest
        if not path.exists():
            path.write_bytes(data)
        return digest

    def _blob(self, sha256: str) -> bytes:
        return (self.storage / sha256).read_bytes()

    def _new_commit(self, repo: Repo, parent: str | None, files: dict[str, Entry], message: str) -> str:
        sha = hashlib.sha1(f"{repo.repo_id}:{parent}:{next(self._counter)}:{message}".encode()).hexdigest()
        repo.commits[sha], repo.parents[sha], repo.messages[sha] = dict(files), parent, message
        return sha

    def _entry(self, data: bytes, path: str) -> Entry:
        return Entry(self._store(data), len(data), git_oid(data), path.endswith(LFS_SUFFIXES))

    def _repo(self, repo_type: str, repo_id: str, token: str | None, write: bool = False) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if write or (repo is not None and repo.private):
            self._auth(token)
        if repo is None:
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def _auth(self, token: str | None) -> None:
        if token is None:
            raise HubError(401, "You must be authenticated to access this resource")
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")

    @staticmethod
    def _commit(repo: Repo, revision: str) -> str:
        if revision in repo.refs:
            return repo.refs[revision]
        if revision in repo.commits:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    # -- plumbing ------------------------------------------------------------------------------

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size)
                self.rfile.readline()
                if size == 0:
                    break
                chunks.append(chunk)
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body=b"", headers: dict | None = None, content_type: str = "application/json") -> None:
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        headers = dict(headers or {})
        content_type = headers.pop("Content-Type", content_type)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

    def _dispatch(self) -> None:
        hub = self.server
        url = urlsplit(self.path)
        body = self._body() if self.command in ("POST", "PUT") else b""
        with hub.lock:
            hub.requests.append((self.command, url.path, self.headers.get("Range")))
            fault = next((f for f in hub.faults if f[0] == self.command and f[1] in url.path and f[3] > 0), None)
            if fault is not None:
                fault[3] -= 1
                if fault[2] == 0:
                    self.close_connection = True
                    return self.connection.shutdown(2)  # socket.SHUT_RDWR: no answer at all
                if fault[2] is not None:
                    return self._send(fault[2], {"error": "injected failure"}, {"X-Error-Message": "injected failure"})
        # Split before unquoting so that a revision like refs%2Fpr%2F1 stays one segment.
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        query = parse_qs(url.query)
        try:
            with hub.lock:
                status, answer, headers = self._route(parts, query, body)
        except HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            return self._send(err.status, {"error": err.message}, headers)
        if fault is not None:  # cut the connection half-way through the body
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(answer[: len(answer) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if isinstance(answer, bytes):
            return self._send(status, answer, headers, content_type="application/octet-stream")
        self._send(status, answer, headers)

    # -- routes --------------------------------------------------------------------------------

    def _route(self, parts: list[str], query: dict, body: bytes):
        hub, method = self.server, self.command
        if parts == ["api", "agent-harnesses"]:  # huggingface_hub 2.4 reads this as a dict
            return 200, {"standardEnvVars": [], "harnesses": {}}, {}
        if parts == ["api", "validate-yaml"] and method == "POST":
            return 200, {"errors": [], "warnings": []}, {}
        if parts == ["api", "repos", "create"] and method == "POST":
            return self._create(json.loads(body or b"{}"))
        if parts[:1] == ["lfs-upload"] and method == "PUT":  # a pre-signed URL: no token, checked by hash
            if hashlib.sha256(body).hexdigest() != parts[1]:
                raise HubError(400, "LFS upload: sha256 mismatch")
            hub._store(body)
            return 200, {}, {}
        if len(parts) >= 3 and parts[0] == "api" and parts[1] in TYPES:
            return self._api(TYPES[parts[1]], parts[2:], query, body)
        repo_type = TYPES.get(parts[0]) if parts else None
        rest = parts[1:] if repo_type else parts
        repo_type = repo_type or "model"
        if len(rest) >= 3 and rest[1].endswith(".git") and rest[2:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(repo_type, f"{rest[0]}/{rest[1][:-4]}", json.loads(body))
        if len(rest) >= 5 and rest[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(repo_type, f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:]))
        raise HubError(404, f"no route for {method} /{'/'.join(parts)}")

    def _create(self, payload: dict):
        hub = self.server
        hub._auth(self._token())
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{hub.url}/{prefix}{repo_id}"
        if (repo_type, repo_id) in hub.repos:
            return 409, {"error": "You already created this repo", "url": url}, {}
        repo = Repo(repo_type, repo_id, bool(payload.get("private")) or payload.get("visibility") == "private")
        repo.refs["main"] = hub._new_commit(repo, None, {".gitattributes": hub._entry(GITATTRIBUTES, ".gitattributes")}, "initial commit")
        hub.repos[(repo_type, repo_id)] = repo
        return 200, {"url": url, "name": repo_id}, {}

    def _api(self, repo_type: str, parts: list[str], query: dict, body: bytes):
        hub, method = self.server, self.command
        if len(parts) < 2:
            raise HubError(404, "bad repo path")
        repo_id, rest = f"{parts[0]}/{parts[1]}", parts[2:]
        write = method == "POST" and rest[:1] in (["commit"], ["branch"])
        repo = hub._repo(repo_type, repo_id, self._token(), write=write)
        if method == "GET" and (not rest or (rest[0] == "revision" and len(rest) == 2)):
            sha = hub._commit(repo, rest[1] if rest else "main")
            siblings = [{"rfilename": p} for p in sorted(repo.commits[sha])]
            return 200, {"id": repo_id, "sha": sha, "private": repo.private, "siblings": siblings, "tags": [],
                         "lastModified": "2026-01-01T00:00:00.000Z", "disabled": False, "gated": False}, {}
        if rest[0] == "preupload" and method == "POST":
            files = repo.commits[hub._commit(repo, rest[1])] if rest[1] in repo.refs else {}
            answer = []
            for f in json.loads(body)["files"]:
                existing = files.get(f["path"])
                lfs = f["path"].endswith(LFS_SUFFIXES)
                oid = None if existing is None else (existing.sha256 if existing.lfs else existing.oid)
                answer.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
            return 200, {"files": answer}, {}
        if rest[0] == "commit" and method == "POST":
            return self._commit(repo, rest[1], query, body)
        if rest[0] == "branch" and method == "POST":
            branch = "/".join(rest[1:])
            if branch in repo.refs:
                raise HubError(409, f"Reference already exists: {branch}")
            start = (json.loads(body) if body else {}).get("startingPoint") or "main"
            repo.refs[branch] = hub._commit(repo, start)
            return 200, {}, {}
        if rest[0] == "tree" and method == "GET":
            files = repo.commits[hub._commit(repo, rest[1])]
            base = "/".join(rest[2:])
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            entries = self._listing(files, base, recursive)
            if base and not entries and base not in files:
                raise HubError(404, f"Entry not found: {base}", "EntryNotFound")
            return 200, entries, {}
        if rest[0] == "paths-info" and method == "POST":
            files = repo.commits[hub._commit(repo, rest[1])]
            form = parse_qs(body.decode())
            paths = form.get("paths", [])
            dirs = {d for p in files for d in _parents(p)}
            answer = [self._file_item(p, files[p]) for p in paths if p in files]
            answer += [{"type": "directory", "oid": git_oid(p.encode()), "path": p} for p in paths if p in dirs]
            return 200, answer, {}
        raise HubError(404, f"no route for {method} api/{repo_type}s/{repo_id}/{'/'.join(rest)}")

    @staticmethod
    def _file_item(path: str, entry: Entry) -> dict:
        item = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
        if entry.lfs:
            item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": 134}
        return item

    def _listing(self, files: dict[str, Entry], base: str, recursive: bool) -> list[dict]:
        prefix = f"{base}/" if base else ""
        entries, dirs = [], set()
        for path in sorted(files):
            if not path.startswith(prefix):
                continue
            below = path[len(prefix):].split("/")
            for depth in range(1, len(below) if recursive else min(len(below), 2)):
                dirs.add(prefix + "/".join(below[:depth]))
            if recursive or len(below) == 1:
                entries.append(self._file_item(path, files[path]))
        entries += [{"type": "directory", "oid": git_oid(d.encode()), "path": d} for d in sorted(dirs)]
        return entries

    def _commit(self, repo: Repo, revision: str, query: dict, body: bytes):
        hub = self.server
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        create_pr = query.get("create_pr", ["0"])[0] in ("1", "true")
        if revision not in repo.refs:
            raise HubError(404, f"Invalid rev id: {revision} (commits go to a branch)", "RevisionNotFound")
        head = repo.refs[revision]
        if header.get("parentCommit") and header["parentCommit"] != head:
            raise HubError(412, "parentCommit is not the head of the revision")
        files = dict(repo.commits[head])
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = hub._entry(base64.b64decode(value["content"]), value["path"])
            elif key == "lfsFile":
                if not (hub.storage / value["oid"]).is_file():
                    raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                data = hub._blob(value["oid"])
                files[value["path"]] = Entry(value["oid"], len(data), git_oid(data), True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                files = {p: e for p, e in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        sha = hub._new_commit(repo, head, files, header.get("summary", ""))
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        pr_url = None
        if create_pr:
            repo.pull_requests += 1
            repo.refs[f"refs/pr/{repo.pull_requests}"] = sha
            pr_url = f"{hub.url}/{prefix}{repo.repo_id}/discussions/{repo.pull_requests}"
        else:
            repo.refs[revision] = sha
        return 200, {"commitUrl": f"{hub.url}/{prefix}{repo.repo_id}/commit/{sha}", "commitOid": sha,
                     "pullRequestUrl": pr_url}, {}

    def _lfs_batch(self, repo_type: str, repo_id: str, payload: dict):
        hub = self.server
        hub._repo(repo_type, repo_id, self._token(), write=payload.get("operation") == "upload")
        objects = []
        for obj in payload["objects"]:
            item = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not (hub.storage / obj["oid"]).is_file():
                item["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{obj['oid']}", "header": {}}}
            objects.append(item)
        return 200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, {"Content-Type": "application/vnd.git-lfs+json"}

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str):
        hub = self.server
        repo = hub._repo(repo_type, repo_id, self._token())
        sha = hub._commit(repo, revision)
        entry = repo.commits[sha].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        data = hub.tampered.get((repo_id, path)) or hub._blob(entry.sha256)
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update({"ETag": f'"{entry.sha256}"', "X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(len(data))})
        else:
            headers["ETag"] = f'"{entry.oid}"'
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes=") and self.command == "GET":
            start, _, end = ranged[len("bytes="):].partition("-")
            start, end = int(start or 0), int(end) if end else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return 206, data[start:end + 1], headers
        return 200, data, headers


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]
