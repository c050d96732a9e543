"""Where factorized datasets come from and go to: local folders, the Hugging Face Hub, the zoo.

:func:`resolve` turns a name into a :class:`Source` (a folder plus a way to fetch missing files);
:func:`push_files` publishes a set of files to a Hub dataset repo in one commit. Downloads go
through ``huggingface_hub``'s cache, so ``HF_HOME``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` apply.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi, constants, hf_hub_download
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

from .io import FormatError

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Short zoo names -> the project's Hub dataset repos. Each is made by ``recipes/<name>.yaml`` and
#: bundled in ``ZOO_DIR`` (its card states the recipe, budget and measured accuracy).
ZOO: dict[str, str] = {name: f"haba-datasets/{name}" for name in (
    "cifar10-ipc1", "cifar10-ipc10", "cifar10-ipc50", "fashion_mnist-ipc1", "fashion_mnist-ipc10")}  # fmt: skip
#: Copies of zoo datasets shipped inside the package (``ZOO_DIR / name``): what a zoo name loads.
ZOO_DIR = Path(__file__).parent / "zoo"
REPO_TYPE = "dataset"


class HubError(OSError):
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

    def read(self, filename: str, reader: Callable[[Path], T]) -> T:
        """``reader(folder)`` once ``filename`` is present. A Hub file that fails validation is
        downloaded again once (it may be a corrupted cache entry) before the error is raised."""
        if not self.is_local and filename not in self.present:
            self.download(filename, False)
            self.present.add(filename)
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


def resolve(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Source:
    """Find a dataset: a local folder, else a zoo name, else a Hub dataset repo id (``user/name``).

    A zoo name is served from the copy bundled with the package (no network); it goes to its Hub
    repo only when a ``revision`` or ``force_download`` asks for the Hub, or when this install has
    no bundled copy. Raises :class:`HubError`.
    """
    path = Path(name_or_path)
    if path.is_dir():
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to Hub repos, but {str(path)!r} is a local folder")
        return Source(path, f"local folder {str(path)!r}")
    name = str(name_or_path)
    bundled = ZOO_DIR / name
    if name in ZOO and revision is None and not force_download and bundled.is_dir():
        return Source(bundled, f"zoo dataset {name!r} as bundled with haba-datasets")
    repo_id = ZOO.get(name, name)
    if name not in ZOO and not _is_repo_id(name):
        known = ", ".join(sorted(ZOO)) or "none published yet"
        raise HubError(f"{name!r} is not a local folder, a zoo name (known: {known}) or a Hub dataset repo id 'user/name'")
    where = f"Hub dataset repo {repo_id!r} at revision {revision or 'main'!r} on {constants.ENDPOINT}"
    tried = f"tried local folder {name!r} (not found), then {where}"
    kwargs = {"repo_id": repo_id, "repo_type": REPO_TYPE, "cache_dir": cache_dir, "token": token,
              "local_files_only": local_files_only}  # fmt: skip
    try:
        config = Path(hf_hub_download(filename="config.json", revision=revision, force_download=force_download, **kwargs))
    except Exception as err:  # noqa: BLE001 - transport errors come from the client's HTTP library
        raise HubError(f"could not load {name!r}: {tried}: {_reason(err, 'config.json')}") from err
    commit = config.parent.name  # the cache keeps each commit's files in snapshots/<commit>/
    description = f"{where}, commit {commit[:10]}"

    def download(filename: str, force: bool) -> None:
        try:
            hf_hub_download(filename=filename, revision=commit, force_download=force or force_download, **kwargs)
        except Exception as err:  # noqa: BLE001 - as above
            raise HubError(f"could not fetch {filename} from {description}: {_reason(err, filename)}") from err

    offline = local_files_only or constants.HF_HUB_OFFLINE
    return Source(config.parent, description, download, can_refetch=not offline, present={"config.json"})


def push_files(
    files: dict[str, bytes],
    repo_id: str,
    *,
    owned: Callable[[str], bool],
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> CommitInfo:
    """Make ``files`` the content of a Hub dataset repo in ONE commit (creating repo and branch
    as needed). Files already in the repo that ``owned(path)`` claims but ``files`` lacks are
    deleted in the same commit, so a failure part-way leaves the repo as it was."""
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
        if revision is not None and not create_pr:
            api.create_branch(repo_id, repo_type=REPO_TYPE, branch=revision, exist_ok=True)
        existing = api.list_repo_files(repo_id, repo_type=REPO_TYPE, revision=revision)
        operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=data) for p, data in files.items()]
        operations += [CommitOperationDelete(path_in_repo=p) for p in existing if owned(p) and p not in files]
        return api.create_commit(
            repo_id, operations, repo_type=REPO_TYPE, revision=revision, create_pr=create_pr,
            commit_message=commit_message or f"Upload factorized dataset ({len(files)} files)",
        )  # fmt: skip
    except (HfHubHTTPError, HFValidationError, OSError, RuntimeError) as err:  # LFS failures come as RuntimeError
        target = f"Hub dataset repo {repo_id!r} (revision {revision or 'main'!r}) on {constants.ENDPOINT}"
        raise HubError(f"could not push to {target}; nothing was committed: {_reason(err)}") from err


def _is_repo_id(name: str) -> bool:
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return name.count("/") == 1


def _reason(err: BaseException, filename: str = "the file") -> str:
    """One line on why a Hub call failed, with the likely fix."""
    if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        if isinstance(err.__cause__, HfHubHTTPError):  # the Hub answered with an error
            return f"{filename} is not in the local cache, and the Hub failed: {_reason(err.__cause__, filename)}"
        return (f"{filename} is not in the local cache, and the Hub was not asked (HF_HUB_OFFLINE=1 or "
                "local_files_only=True) or could not be reached")  # fmt: skip
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
