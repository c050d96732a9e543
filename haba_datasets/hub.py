"""Where factorized datasets come from and go to: local folders, the Hugging Face Hub, the zoo.

:func:`resolve` turns a name into a :class:`Source` (a folder plus a way to fetch missing files);
:func:`push_files` publishes a set of files to a Hub dataset repo in one commit. Downloads go
through ``huggingface_hub``'s cache, so ``HF_HOME``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` apply.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from huggingface_hub import (
    CommitInfo,
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    constants,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from .errors import HabaError
from .fileformat import CONFIG, FormatError
from .zoo import ZOO, ZOO_DIR  # the zoo names and their bundled copies

__all__ = ["HubError", "Source", "resolve"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

REPO_TYPE = "dataset"


def _transport_errors(kind: str) -> tuple[type[Exception], ...]:
    """An error class of the HTTP client under huggingface_hub (httpx2 in 2.x, httpx in 1.x)."""
    found = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(getattr(importlib.import_module(name), kind))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


_TRANSPORT_ERRORS = _transport_errors("TransportError")
#: No connection at all (refused, or the host name does not resolve): retrying will not help.
_CONNECT_ERRORS = _transport_errors("ConnectError")
#: What a Hub call may raise besides programming errors: HTTP answers, validation, transport
#: (connection refused, dropped, timed out), file-system errors of the cache; LFS upload failures
#: come wrapped as RuntimeError.
HUB_CALL_ERRORS = (HfHubHTTPError, HFValidationError, EntryNotFoundError, OSError, RuntimeError, *_TRANSPORT_ERRORS)


class HubError(HabaError, OSError):
    """A dataset could not be fetched from, or published to, the Hub; the message says what was tried."""


@dataclass
class Source:
    """The folder a dataset's files are read from, and how to (re-)download one of them."""

    folder: Path
    description: str
    download: Callable[[str, bool], None] | None = None  # (filename, force); None: a local folder
    can_refetch: bool = False
    present: set[str] = field(default_factory=set)  # files already fetched

    @property
    def is_local(self) -> bool:
        return self.download is None

    def fetch(self, filenames) -> None:
        """Download every one of ``filenames`` not fetched yet (nothing for a local folder)."""
        for filename in filenames:
            if not self.is_local and filename not in self.present:
                self.download(filename, False)
                self.present.add(filename)

    def read(self, filename: str, reader: Callable[[Path], T]) -> T:
        """``reader(folder)`` once ``filename`` is present. A Hub file that fails validation is
        downloaded again once (it may be a corrupted cache entry) before the error is raised."""
        self.fetch([filename])
        try:
            return reader(self.folder)
        except FormatError as err:
            if not self.can_refetch:
                raise FormatError(f"{err} [{self.description}]") from None
            logger.warning("%s failed validation (%s); downloading it again", filename, err)
        self.download(filename, True)
        try:
            return reader(self.folder)
        except FormatError as err:
            raise FormatError(f"{err} [{self.description}; downloaded twice]") from None


def resolve(name_or_path: str | Path, *, revision: str | None, cache_dir: str | Path | None, force_download: bool,
            local_files_only: bool, token: str | bool | None) -> Source:  # fmt: skip
    """Find a dataset: a local folder, else a zoo name, else a Hub dataset repo id (``user/name``).

    A zoo name is served from the copy bundled with the package (no network); it goes to its Hub
    repo only when a ``revision`` or ``force_download`` asks for the Hub, or when this install has
    no bundled copy. The options are :meth:`FactorizedDataset.from_pretrained`'s, which holds their
    defaults. Raises :class:`HubError`.
    """
    path = Path(name_or_path)
    if _is_dir(path):
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to Hub repos, but {str(path)!r} is a local folder")
        return Source(path, f"local folder {str(path)!r}")
    name = str(name_or_path)
    if name in ZOO and revision is None and not force_download and (ZOO_DIR / name).is_dir():
        return Source(ZOO_DIR / name, f"zoo dataset {name!r} as bundled with haba-datasets")
    repo_id = ZOO.get(name, name)
    if name not in ZOO and not _is_repo_id(name):
        shown = repr(name) if len(name) <= 100 else f"{name[:60]!r}... ({len(name):,} characters)"
        close = difflib.get_close_matches(name, ZOO, n=1, cutoff=0.75)
        hint = f"; did you mean the zoo dataset {close[0]!r}?" if close else f" (zoo names: {', '.join(sorted(ZOO))})"
        raise HubError(f"{shown} is not a local folder, a zoo name or a Hub dataset repo id 'user/name'{hint}")
    where = f"Hub dataset repo {repo_id!r} at revision {revision or 'main'!r} on {constants.ENDPOINT}"
    tried = f"tried local folder {name!r} (not found), then {where}"
    offline = _offline(local_files_only) or _unreachable(repo_id, revision, token)
    if offline is not None and force_download:
        raise HubError(f"could not load {name!r}: {tried}: force_download=True needs the Hub, but {offline}")
    kwargs = {"repo_id": repo_id, "repo_type": REPO_TYPE, "cache_dir": cache_dir, "token": token,
              "local_files_only": offline is not None}  # fmt: skip
    try:
        config = Path(hf_hub_download(filename=CONFIG, revision=revision, force_download=force_download, **kwargs))
    except HUB_CALL_ERRORS as err:
        raise HubError(f"could not load {name!r}: {tried}: {_reason(err, CONFIG, offline)}") from err
    commit = config.parent.name  # the cache keeps each commit's files in snapshots/<commit>/
    description = f"{where}, commit {commit[:10]}"

    def download(filename: str, force: bool) -> None:
        try:
            hf_hub_download(filename=filename, revision=commit, force_download=force or force_download, **kwargs)
        except HUB_CALL_ERRORS as err:
            raise HubError(f"could not fetch {filename} from {description}: {_reason(err, filename, offline)}") from err

    return Source(config.parent, description, download, can_refetch=offline is None, present={CONFIG})


def push_files(files: dict[str, bytes], repo_id: str, *, owned: Callable[[str], bool], private: bool | None,
               token: str | None, revision: str | None, commit_message: str | None,
               create_pr: bool) -> CommitInfo:  # fmt: skip
    """Make ``files`` the content of a Hub dataset repo in ONE commit (creating repo and branch
    as needed). Files already in the repo that ``owned(path)`` claims but ``files`` lacks are
    deleted in the same commit, so a failure part-way leaves the repo as it was. The options are
    :meth:`FactorizedDataset.push_to_hub`'s, which holds their defaults.

    The commit names the head it was built on (``parent_commit``), so it never lands on top of
    someone else's. When the connection fails after the commit was sent, the head is read again:
    if it now holds this ``config.json``, the push landed and its commit is returned (with a
    warning); otherwise :class:`HubError` says whether anything was committed.
    """
    api = HfApi(token=token)
    target = f"Hub dataset repo {repo_id!r} (revision {revision or 'main'!r}) on {constants.ENDPOINT}"
    message = commit_message or f"Upload factorized dataset ({len(files)} files)"
    parent = None
    try:
        api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
        if revision is not None and not create_pr:
            api.create_branch(repo_id, repo_type=REPO_TYPE, branch=revision, exist_ok=True)
        info = api.repo_info(repo_id, repo_type=REPO_TYPE, revision=revision, files_metadata=False)
        parent = info.sha
        operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=data) for p, data in files.items()]
        operations += [CommitOperationDelete(path_in_repo=s.rfilename) for s in info.siblings or []
                       if owned(s.rfilename) and s.rfilename not in files]  # fmt: skip
        return api.create_commit(
            repo_id, operations, repo_type=REPO_TYPE, revision=revision, create_pr=create_pr,
            commit_message=message, parent_commit=parent,
        )  # fmt: skip
    except HUB_CALL_ERRORS as err:
        if parent is None or not isinstance(err, _TRANSPORT_ERRORS):  # before the commit, or the Hub said no
            raise HubError(f"could not push to {target}; nothing was committed: {_reason(err)}") from err
        if create_pr:
            raise HubError(f"the connection to {target} failed while opening a pull request, which may or may "
                           f"not exist now; check the repo's discussions: {_reason(err)}") from err  # fmt: skip
        landed, known = _landed(api, repo_id, revision, parent, files.get(CONFIG))
        if landed is None:
            raise HubError(f"the connection to {target} failed after the commit was sent ({_reason(err)}); {known}") from err
        logger.warning("the connection to %s failed after the commit was sent (%s), but the commit landed (%s)",
                       target, _reason(err), landed)  # fmt: skip
        url = f"{constants.ENDPOINT}/datasets/{repo_id}/commit/{landed}"
        return CommitInfo(commit_url=url, commit_message=message, commit_description="", oid=landed)


def _offline(local_files_only: bool) -> str | None:
    """Why the Hub must not be asked (offline mode), with how to allow it; None when it may be."""
    if local_files_only:
        return "local_files_only=True forbids asking the Hub (leave it out to download)"
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE=1 forbids asking the Hub (unset it to download, or load the dataset once online first)"
    return None


def _unreachable(repo_id: str, revision: str | None, token) -> str | None:
    """Why the Hub cannot be connected to at all (refused, no network), or None.

    ``hf_hub_download`` backs off for about 23 s before giving up on a connection, which is right
    for a flaky network and wrong for a refused connection or no network at all; one HEAD request
    without retries tells them apart. Anything else is left to ``hf_hub_download``.
    """
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, CONFIG, repo_type=REPO_TYPE, revision=revision), token=token)
    except _CONNECT_ERRORS as err:
        return f"there is no connection to {constants.ENDPOINT} ({err}); check the network (or HF_ENDPOINT)"
    except HUB_CALL_ERRORS:
        pass  # an answer, or a flaky connection: hf_hub_download retries and reports it
    return None


def _landed(api: HfApi, repo_id: str, revision: str | None, parent: str, config: bytes | None) -> tuple[str | None, str]:
    """After an ambiguous commit: (the new commit's id if the head moved to one holding this
    ``config``, else None; a sentence saying what is known)."""
    try:
        head = api.repo_info(repo_id, repo_type=REPO_TYPE, revision=revision, files_metadata=False).sha
        if head == parent:
            return None, "nothing was committed (the head is unchanged); pushing again is safe"
        entries = api.get_paths_info(repo_id, [CONFIG], repo_type=REPO_TYPE, revision=head)
    except (*HUB_CALL_ERRORS, ValueError) as err:
        return None, f"whether it landed is unknown: the check failed too ({_reason(err)}); look at the repo's history"
    if config is not None and [e.blob_id for e in entries] == [_git_blob_id(config)]:
        return head, "landed"
    return None, f"the head moved to {head[:10]}, which does not hold this dataset's config.json: someone else pushed"


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # e.g. a name longer than the file system allows
        return False


def _is_repo_id(name: str) -> bool:
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return name.count("/") == 1


def _reason(err: BaseException, filename: str = "the file", offline: str | None = None) -> str:
    """One line on why a Hub call failed, with the likely fix (``offline``: why the Hub was not asked)."""
    if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        if isinstance(err.__cause__, HfHubHTTPError):  # the Hub answered with an error
            return f"{filename} is not in the local cache, and the Hub failed: {_reason(err.__cause__, filename)}"
        return f"{filename} is not in the local cache, and {offline or 'the Hub could not be reached'}"
    if isinstance(err, GatedRepoError):
        return "the repo is gated: accept its conditions on the Hub and pass a token"
    if isinstance(err, RepositoryNotFoundError):
        return "repository not found (if it is private, pass token= or run `hf auth login`)"
    if isinstance(err, RevisionNotFoundError):
        return "no such revision (branch, tag or commit) in the repo"
    if isinstance(err, EntryNotFoundError):
        return f"the repo has no {filename} (is it a factorized dataset?)"
    response = getattr(err, "response", None)
    if response is not None and response.status_code == 401:
        return "401 Unauthorized: the repo needs a valid token (pass token= or run `hf auth login`)"
    first = str(err).strip().splitlines()
    reason = first[0] if first else type(err).__name__
    if isinstance(err, RuntimeError) and err.__cause__ is not None:  # huggingface_hub wraps upload errors
        reason += f" ({_reason(err.__cause__)})"
    return reason
