"""A Hugging Face hub on localhost, for rehearsing the study's hub code paths without the network.

It serves the repositories under a folder (``models/ORG/NAME/...`` and ``datasets/ORG/NAME/...``) through
the parts of the hub's HTTP API that ``huggingface_hub`` and ``datasets`` call: repository info, file trees
and path info, and file downloads (whole or by byte range) with the commit and ETag headers the clients
check; and for uploads, creating a repository, the preupload check (every file a regular one, with the
blob id of the file it would replace, so that the client skips what has not changed), commits of base64
files, and the check of a model card's metadata (always valid here). Each repository has one commit, a hash
of its files; ``main`` resolves to it. Point the clients at it with ``HF_ENDPOINT``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

KINDS = {"models": "", "datasets": "datasets/"}


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repository:
    def __init__(self, kind: str, repo_id: str, folder: Path, private: bool = False):
        self.kind, self.repo_id, self.folder, self.private = kind, repo_id, folder, private
        self.refresh()

    def refresh(self) -> None:
        self.files = sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file())
        digest = hashlib.sha1()
        for name in self.files:
            digest.update(name.encode() + b"\0" + (self.folder / name).read_bytes())
        self.commit = digest.hexdigest()

    def entry(self, path: str) -> dict | None:
        target = self.folder / path
        if target.is_file():
            data = target.read_bytes()
            return {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": path}
        if target.is_dir():
            return {"type": "directory", "oid": git_blob_id(path.encode()), "size": 0, "path": path}
        return None

    def tree(self, path: str, recursive: bool) -> list[dict]:
        prefix = f"{path}/" if path else ""
        paths = set()
        for name in self.files:
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            depth = len(parts) if recursive else 1
            paths.update(prefix + "/".join(parts[: i + 1]) for i in range(depth))
        return [self.entry(p) for p in sorted(paths)]

    def info(self) -> dict:
        return {
            "id": self.repo_id,
            "sha": self.commit,
            "siblings": [{"rfilename": name} for name in self.files],
            "private": self.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "cardData": {},
            "lastModified": "2026-01-01T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z",
        }


class LocalHub:
    """``with LocalHub(folder) as hub:`` serves the folder's repositories at ``hub.url``."""

    def __init__(self, folder: Path, port: int = 0):
        self.folder, self.repositories = folder, {}
        for kind in KINDS:
            for repo in sorted((folder / kind).glob("*/*")) if (folder / kind).is_dir() else []:
                repo_id = f"{repo.parent.name}/{repo.name}"
                self.repositories[(kind, repo_id)] = Repository(kind, repo_id, repo)
        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def commit(self, kind: str, repo_id: str) -> str:
        return self.repositories[(kind, repo_id)].commit

    def __enter__(self) -> LocalHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                self._route(body=False)

            def do_GET(self) -> None:
                self._route(body=True)

            def do_POST(self) -> None:
                self._route(body=True)

            def _send(self, status: int, payload: bytes, headers: dict, body: bool) -> None:
                self.send_response(status)
                for name, value in {"Content-Length": str(len(payload)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                if body:
                    self.wfile.write(payload)

            def _json(self, value, body: bool, headers: dict | None = None) -> None:
                payload = json.dumps(value).encode()
                self._send(200, payload, {"Content-Type": "application/json", **(headers or {})}, body)

            def _missing(self, code: str, body: bool) -> None:
                self._send(404, b'{"error": "not found"}', {"X-Error-Code": code}, body)

            def _repository(self, kind: str, repo_id: str, revision: str, body: bool):
                repository = hub.repositories.get((kind, repo_id))
                if repository is None:
                    self._missing("RepoNotFound", body)
                    return None
                if revision not in ("main", repository.commit):
                    self._missing("RevisionNotFound", body)
                    return None
                return repository

            def _route(self, body: bool) -> None:
                url = urlparse(self.path)
                path, query = unquote(url.path), parse_qs(url.query)
                hub.requests.append(f"{self.command} {self.path}")
                if path == "/api/repos/create":
                    self._create(json.loads(self._body()), body)
                    return
                if path == "/api/validate-yaml":  # a model card's metadata, which the hub checks
                    self._body()
                    self._json({}, body)
                    return
                api = re.fullmatch(
                    r"/api/(models|datasets)/([^/]+/[^/]+)"
                    r"(?:/(revision|tree|paths-info|preupload|commit)/([^/]+)(?:/(.*))?)?",
                    path,
                )
                if api:
                    kind, repo_id, verb, revision, rest = api.groups()
                    repository = self._repository(kind, repo_id, revision or "main", body)
                    if repository is None:
                        return
                    if verb in (None, "revision"):
                        self._json(repository.info(), body)
                    elif verb == "preupload":
                        self._json(
                            {
                                "files": [
                                    self._upload_mode(repository, f)
                                    for f in json.loads(self._body())["files"]
                                ]
                            },
                            body,
                        )
                    elif verb == "commit":
                        self._commit(repository, body)
                    elif verb == "tree":
                        recursive = query.get("recursive", ["false"])[0].lower() == "true"
                        if rest and repository.entry(rest) is None:
                            self._missing("EntryNotFound", body)
                            return
                        self._json(repository.tree(rest or "", recursive), body)
                    else:
                        self._json([e for e in map(repository.entry, self._posted_paths()) if e], body)
                    return
                resolve = re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if resolve:
                    kind = "datasets" if resolve.group(1) else "models"
                    repository = self._repository(kind, resolve.group(2), resolve.group(3), body)
                    if repository is not None:
                        self._file(repository, resolve.group(4), body)
                    return
                self._missing("EntryNotFound", body)

            def _body(self) -> str:
                return self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()

            def _create(self, request: dict, body: bool) -> None:
                repo_id = (
                    f"{request['organization']}/{request['name']}"
                    if request.get("organization")
                    else request["name"]
                )
                kind = "datasets" if request.get("type") == "dataset" else "models"
                if (kind, repo_id) in hub.repositories:
                    answer = {"error": "You already created this repo", "url": f"{hub.url}/{repo_id}"}
                    self._send(409, json.dumps(answer).encode(), {"Content-Type": "application/json"}, body)
                    return
                folder = hub.folder / kind / repo_id
                folder.mkdir(parents=True)
                private = request.get("visibility") == "private" or bool(request.get("private"))
                hub.repositories[(kind, repo_id)] = Repository(kind, repo_id, folder, private)
                self._json({"url": f"{hub.url}/{repo_id}", "name": repo_id}, body)

            @staticmethod
            def _upload_mode(repository: Repository, file: dict) -> dict:
                entry = repository.entry(file["path"])
                oid = entry["oid"] if entry and entry["type"] == "file" else None
                return {"path": file["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid}

            def _commit(self, repository: Repository, body: bool) -> None:
                for line in filter(None, self._body().splitlines()):
                    item = json.loads(line)
                    if item["key"] == "file":
                        target = repository.folder / item["value"]["path"]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(base64.b64decode(item["value"]["content"]))
                    elif item["key"] == "deletedFile":
                        (repository.folder / item["value"]["path"]).unlink(missing_ok=True)
                repository.refresh()
                url = f"{hub.url}/{repository.repo_id}/commit/{repository.commit}"
                self._json({"commitUrl": url, "commitOid": repository.commit, "pullRequestUrl": None}, body)

            def _posted_paths(self) -> list[str]:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length).decode()
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    paths = json.loads(raw).get("paths", [])
                else:
                    paths = parse_qs(raw).get("paths", [])
                return [paths] if isinstance(paths, str) else list(paths)

            def _file(self, repository: Repository, name: str, body: bool) -> None:
                target = repository.folder / name
                if not target.is_file():
                    self._missing("EntryNotFound", body)
                    return
                data = target.read_bytes()
                headers = {
                    "X-Repo-Commit": repository.commit,
                    "ETag": f'"{git_blob_id(data)}"',
                    "Accept-Ranges": "bytes",
                    "Content-Type": "application/octet-stream",
                }
                wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if wanted:
                    start = int(wanted.group(1))
                    end = int(wanted.group(2)) if wanted.group(2) else len(data) - 1
                    chunk = data[start : end + 1]
                    headers["Content-Range"] = f"bytes {start}-{start + len(chunk) - 1}/{len(data)}"
                    self._send(206, chunk, headers, body)
                else:
                    self._send(200, data, headers, body)

        return Handler
