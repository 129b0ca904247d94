"""The API's answers as dataclasses. Attribute names are the API's field names
(``deps(...).locked_versions``, ``export(...).pyproject_toml``); fields the API leaves out of an
answer are ``None`` (or empty), and fields a newer server adds are ignored.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import sys
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Type, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class HostConstraint:
    """A bare name the host project constrains, and the requirement that was handed to uv."""

    requested: str
    applied: str


@dataclasses.dataclass(frozen=True)
class CreatedEnv:
    """``create``: the new environment."""

    workflow_id: str
    node_id: str
    version_id: str
    env_path: str
    python_version: str
    python_full_version: str
    status: str
    pyproject_toml: str
    packages: List[str]
    host_constraints_applied: List[HostConstraint]
    packages_installed: int
    revision: int
    operation_id: int
    build_id: str = ""


@dataclasses.dataclass(frozen=True)
class Deps:
    """``deps`` and the answers of ``add``, ``remove`` and ``update``."""

    workflow_id: str
    node_id: str
    version_id: str
    dependencies: List[str]
    locked_versions: Dict[str, str]
    revision: int
    status: Optional[str] = None
    packages: List[str] = dataclasses.field(default_factory=list)
    host_constraints_applied: List[HostConstraint] = dataclasses.field(default_factory=list)
    operation_id: Optional[int] = None
    build_id: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class RolledBack(Deps):
    """``rollback``: the deps of the new current revision, which revision's files and build it took."""

    rolled_back_to: int = 0
    rebuilt: bool = False


@dataclasses.dataclass(frozen=True)
class Synced:
    """``sync``: the environment rebuilt from its lock."""

    workflow_id: str
    node_id: str
    version_id: str
    status: str
    packages_installed: int
    revision: int
    operation_id: int
    build_id: str = ""
    repaired: bool = False
    rebuilt: bool = False


@dataclasses.dataclass(frozen=True)
class Export:
    """``export``: the project files that reproduce the environment."""

    workflow_id: str
    node_id: str
    version_id: str
    pyproject_toml: str
    uv_lock: str
    revision: int


@dataclasses.dataclass(frozen=True)
class RunResult:
    """``run``: what the code did. ``stdout`` and ``stderr`` are text (decoded as UTF-8, invalid
    bytes replaced); ``stdout_bytes`` and ``stderr_bytes`` are the exact bytes, also when the
    fabric had to send them as base64 (``stdout_encoding == "base64"``)."""

    workflow_id: str
    node_id: str
    version_id: str
    stdout: str
    stderr: str
    stdout_bytes: bytes
    stderr_bytes: bytes
    stdout_encoding: str
    stderr_encoding: str
    exit_code: int
    exit_reason: str
    duration_ms: int
    timed_out: bool
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    revision: Optional[int] = None
    operation_id: Optional[int] = None
    woke: bool = False
    #: forked from the build's warm interpreter on the agent, not started cold (same answer)
    warm: bool = False

    @property
    def ok(self) -> bool:
        """The code exited with status 0."""
        return self.exit_code == 0 and not self.timed_out


@dataclasses.dataclass(frozen=True)
class Deleted:
    """``delete``."""

    workflow_id: str
    node_id: str
    version_id: str
    status: str
    bytes_freed: int
    operation_id: int


@dataclasses.dataclass(frozen=True)
class Disk:
    """What an agent sees of an environment on the shared storage."""

    exists: bool
    pyproject_toml: bool
    uv_lock: bool
    venv: bool
    files_match_revision: bool
    venv_in_sync: bool
    interpreter_present: bool
    packages_installed: int
    env_path: str
    build_id: str = ""


@dataclasses.dataclass(frozen=True)
class PackageDamage:
    name: str
    version: str
    missing: List[str]
    wrong_size: List[str]
    missing_count: int
    wrong_size_count: int


@dataclasses.dataclass(frozen=True)
class Build:
    """An environment's current build and what verifying it against its packages' RECORD found."""

    id: str
    state: str
    packages: int
    shared_with: int
    verified: bool
    intact: bool
    files_checked: int
    damaged: List[PackageDamage] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class EnvView:
    """An environment as recorded (``list``)."""

    workflow_id: str
    node_id: str
    version_id: str
    state: str
    python_version: str
    python_path: str
    env_path: str
    revision: int
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime
    last_error: Optional[str] = None
    build_id: str = ""
    disk_revision: Optional[int] = None
    preload: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Status:
    """``status``: the record and what the agent sees on disk."""

    workflow_id: str
    node_id: str
    version_id: str
    state: str
    python_version: str
    python_path: str
    env_path: str
    revision: int
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime
    exists: bool
    in_step: bool
    checked_at: datetime
    operations_in_progress: List[str] = dataclasses.field(default_factory=list)
    disk: Optional[Disk] = None
    disk_error: Optional[str] = None
    last_error: Optional[str] = None
    build_id: str = ""
    disk_revision: Optional[int] = None
    build: Optional[Build] = None
    preload: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Preload:
    """``set_preload``: the modules the build's warm interpreter imports before any run."""

    workflow_id: str
    node_id: str
    version_id: str
    preload: List[str]
    operation_id: int


@dataclasses.dataclass(frozen=True)
class EnvList:
    """``list``: one page of environments; ``next_cursor`` is None on the last."""

    environments: List[EnvView]
    next_cursor: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Operation:
    """One audit row."""

    id: int
    operation: str
    status: str
    actor: str
    request_id: str
    agent: str
    started_at: datetime
    duration_ms: int
    params: Dict[str, Any] = dataclasses.field(default_factory=dict)
    result: Dict[str, Any] = dataclasses.field(default_factory=dict)
    error_code: Optional[str] = None
    error_message: Optional[str] = None
    finished_at: Optional[datetime] = None


@dataclasses.dataclass(frozen=True)
class History:
    """``operations``: an environment's audit, newest first; ``next_before`` is None on the last page."""

    workflow_id: str
    node_id: str
    version_id: str
    operations: List[Operation]
    next_before: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class CleanupEntry:
    """One environment a cleanup removed or skipped."""

    workflow_id: str
    node_id: str
    version_id: str
    last_used_at: datetime
    bytes_freed: Optional[int] = None
    reason: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class BuildEntry:
    """One build a cleanup considered."""

    build_id: str
    current_envs: int
    last_used_at: datetime
    bytes_freed: int = 0
    reason: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class CleanupResult:
    """``cleanup``: what was (or with a dry run, would be) removed."""

    idle_hours: float
    dry_run: bool
    removed: List[CleanupEntry]
    skipped: List[CleanupEntry]
    bytes_freed: int
    usage_reports: int
    builds_removed: List[BuildEntry] = dataclasses.field(default_factory=list)
    builds_skipped: List[BuildEntry] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Interpreter:
    version: str
    path: str


@dataclasses.dataclass(frozen=True)
class Agent:
    """One agent as the control plane sees it."""

    agent_id: str
    url: str
    state: str
    version: str
    interpreters: List[Interpreter]
    sandbox: Optional[str] = None
    gossip_addr: Optional[str] = None
    load: Optional[int] = None
    fleet_id: Optional[str] = None
    reachable: Optional[bool] = None
    error: Optional[str] = None
    uv_version: Optional[str] = None
    envs_base_path: Optional[str] = None
    uv_cache_dir: Optional[str] = None
    link_mode: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Agents:
    """``agents``: ``mode`` is ``single-host`` or ``fleet``; the fleet fields are None on a single host."""

    mode: str
    agents: List[Agent]
    fleet_id: Optional[str] = None
    control_plane: Optional[str] = None
    gossip_addr: Optional[str] = None
    control_planes: List[str] = dataclasses.field(default_factory=list)
    refused: Dict[str, str] = dataclasses.field(default_factory=dict)


# --- decoding ---------------------------------------------------------------------------------

_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_time(s: str) -> datetime:
    """An RFC 3339 time as the fabric writes it (up to nanoseconds, ``Z``) as an aware datetime."""
    t = _FRACTION.sub(r"\1", s.replace("Z", "+00:00").replace("z", "+00:00"), count=1)
    d = datetime.fromisoformat(t)
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def decode_output(text: str, encoding: str) -> bytes:
    """A run's output stream as its exact bytes (see the API's stdout_encoding)."""
    if encoding == "base64":
        return base64.b64decode(text)
    return text.encode("utf-8")


def build(cls: Type[T], data: Any) -> T:
    """One answer as the dataclass cls: fields by name, nested types by their hints."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: want a JSON object, got {type(data).__name__}")
    hints = get_type_hints(cls, vars(sys.modules[cls.__module__]))
    kwargs: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            kwargs[f.name] = _value(hints[f.name], data[f.name], f"{cls.__name__}.{f.name}")
    return cls(**kwargs)


def _value(hint: Any, v: Any, where: str) -> Any:
    origin = get_origin(hint)
    if origin is Union:
        args = [a for a in get_args(hint) if a is not type(None)]
        return None if v is None else _value(args[0], v, where)
    if v is None:
        # The API sends null for some empty lists and maps: give the empty value.
        if origin is list:
            return []
        if origin is dict:
            return {}
        return None
    if origin is list:
        (item,) = get_args(hint)
        return [_value(item, e, f"{where}[]") for e in v]
    if origin is dict:
        _, val = get_args(hint)
        return {k: _value(val, e, f"{where}[{k!r}]") for k, e in v.items()}
    if hint is datetime:
        return parse_time(v)
    if dataclasses.is_dataclass(hint):
        return build(hint, v)  # type: ignore[arg-type]
    if hint is float and isinstance(v, int):
        return float(v)
    return v


def run_result(data: Dict[str, Any]) -> RunResult:
    """A run's answer, its output decoded as stdout_encoding and stderr_encoding say."""
    data = dict(data)
    for stream in ("stdout", "stderr"):
        raw = decode_output(str(data.get(stream, "")), str(data.get(f"{stream}_encoding", "utf-8")))
        data[f"{stream}_bytes"] = raw
        data[stream] = raw.decode("utf-8", errors="replace")
    return build(RunResult, data)
