"""What each operation sends and how its answer is read, shared by Client and AsyncClient."""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Generic, Iterable, Optional, TypeVar, Union
from urllib.parse import quote

from . import models
from .errors import EnvLocked, ExecutionTimeout, FabricError, error_for

T = TypeVar("T")

Requirements = Union[str, "os.PathLike[str]", None]


@dataclasses.dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the reader of its answer."""

    method: str
    path: str
    read: Callable[[Any], T]
    params: Optional[Dict[str, str]] = None
    json: Optional[Dict[str, Any]] = None
    # When set, an error answer is turned into the exception by this instead of error_for.
    on_error: Optional[Callable[[FabricError], FabricError]] = None
    # Seconds the server may take on top of the client's request timeout (a run's own timeout).
    extra_time: float = 0.0


def env_path(workflow_id: str, node_id: str, suffix: str = "") -> str:
    return f"/envs/{quote(workflow_id, safe='')}/{quote(node_id, safe='')}{suffix}"


def versioned(version_id: Optional[str], **extra: Optional[Union[str, int]]) -> Optional[Dict[str, str]]:
    params = {k: str(v) for k, v in extra.items() if v is not None}
    if version_id is not None:
        params["version_id"] = version_id
    return params or None


def _packages(packages: Union[Iterable[str], str]) -> list[str]:
    if isinstance(packages, str):
        return [packages]  # one requirement, not its characters
    return list(packages)


def create(workflow_id: str, node_id: str, packages: Optional[Iterable[str]], requirements: Requirements,
           python_version: Optional[str], version_id: Optional[str]) -> Call[models.CreatedEnv]:
    body: Dict[str, Any] = {"workflow_id": workflow_id, "node_id": node_id}
    if packages is not None:
        body["packages"] = _packages(packages)
    if requirements is not None:
        if isinstance(requirements, os.PathLike):
            with open(requirements, encoding="utf-8") as f:
                requirements = f.read()
        body["requirements"] = requirements
    if python_version is not None:
        body["python_version"] = python_version
    if version_id is not None:
        body["version_id"] = version_id
    return Call("POST", "/envs", lambda d: models.build(models.CreatedEnv, d), json=body)


def deps(workflow_id: str, node_id: str, version_id: Optional[str]) -> Call[models.Deps]:
    return Call("GET", env_path(workflow_id, node_id, "/deps"), lambda d: models.build(models.Deps, d),
                params=versioned(version_id))


def mutate(method: str, workflow_id: str, node_id: str, packages: Union[Iterable[str], str],
           version_id: Optional[str]) -> Call[models.Deps]:
    return Call(method, env_path(workflow_id, node_id, "/deps"), lambda d: models.build(models.Deps, d),
                params=versioned(version_id), json={"packages": _packages(packages)})


def run(workflow_id: str, node_id: str, code: str, timeout: Optional[float],
        version_id: Optional[str], cold: bool = False) -> Call[models.RunResult]:
    body: Dict[str, Any] = {"code": code}
    if timeout is not None:
        body["timeout"] = timeout
    if cold:
        body["warm"] = False

    def timed_out(err: FabricError) -> FabricError:
        # The fabric answers a timeout with 504 and the output until the kill: keep it as a result.
        if isinstance(err, ExecutionTimeout):
            d = err.details
            err.result = models.run_result({
                "workflow_id": workflow_id, "node_id": node_id, "version_id": version_id or "v1",  # the server's default
                "stdout": d.get("stdout", ""), "stdout_encoding": d.get("stdout_encoding", "utf-8"),
                "stderr": d.get("stderr", ""), "stderr_encoding": d.get("stderr_encoding", "utf-8"),
                "exit_code": -1, "exit_reason": "timeout", "duration_ms": int(d.get("duration_ms", 0)),
                "timed_out": True})
        return err

    return Call("POST", env_path(workflow_id, node_id, "/run"), models.run_result,
                params=versioned(version_id), json=body, on_error=timed_out, extra_time=timeout or 0.0)


def rollback(workflow_id: str, node_id: str, revision: int, version_id: Optional[str]) -> Call[models.RolledBack]:
    return Call("POST", env_path(workflow_id, node_id, "/rollback"), lambda d: models.build(models.RolledBack, d),
                params=versioned(version_id), json={"revision": revision})


def set_preload(workflow_id: str, node_id: str, modules: Iterable[str],
                version_id: Optional[str]) -> Call[models.Preload]:
    if isinstance(modules, str):
        raise TypeError("modules: want a list of module names, not one string")
    return Call("PUT", env_path(workflow_id, node_id, "/preload"), lambda d: models.build(models.Preload, d),
                params=versioned(version_id), json={"modules": list(modules)})


def export(workflow_id: str, node_id: str, version_id: Optional[str]) -> Call[models.Export]:
    return Call("GET", env_path(workflow_id, node_id, "/export"), lambda d: models.build(models.Export, d),
                params=versioned(version_id))


def sync(workflow_id: str, node_id: str, version_id: Optional[str]) -> Call[models.Synced]:
    return Call("POST", env_path(workflow_id, node_id, "/sync"), lambda d: models.build(models.Synced, d),
                params=versioned(version_id))


def status(workflow_id: str, node_id: str, version_id: Optional[str]) -> Call[models.Status]:
    return Call("GET", env_path(workflow_id, node_id), lambda d: models.build(models.Status, d),
                params=versioned(version_id))


def delete(workflow_id: str, node_id: str, version_id: Optional[str]) -> Call[models.Deleted]:
    return Call("DELETE", env_path(workflow_id, node_id), lambda d: models.build(models.Deleted, d),
                params=versioned(version_id))


def list_envs(workflow_id: Optional[str], limit: Optional[int], cursor: Optional[str]) -> Call[models.EnvList]:
    return Call("GET", "/envs", lambda d: models.build(models.EnvList, d),
                params=versioned(None, workflow_id=workflow_id, limit=limit, cursor=cursor))


def operations(workflow_id: str, node_id: str, version_id: Optional[str], limit: Optional[int],
               before: Optional[int]) -> Call[models.History]:
    return Call("GET", env_path(workflow_id, node_id, "/operations"), lambda d: models.build(models.History, d),
                params=versioned(version_id, limit=limit, before=before))


def agents() -> Call[models.Agents]:
    return Call("GET", "/agents", lambda d: models.build(models.Agents, d))


def cleanup(dry_run: bool, idle_hours: Optional[float]) -> Call[models.CleanupResult]:
    body: Dict[str, Any] = {"dry_run": dry_run}
    if idle_hours is not None:
        body["idle_hours"] = idle_hours
    return Call("POST", "/envs/cleanup", lambda d: models.build(models.CleanupResult, d), json=body)


def raise_for(call: Call[Any], status: int, body: Any, retry_after: Optional[float]) -> FabricError:
    err = error_for(status, body, retry_after=retry_after)
    return call.on_error(err) if call.on_error else err


def retry_after(header: Optional[str], now: Optional[datetime] = None) -> Optional[float]:
    """The Retry-After header in seconds: delta-seconds or an HTTP date."""
    if not header:
        return None
    header = header.strip()
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def locked_wait(err: FabricError, attempt: int, max_wait: float) -> Optional[float]:
    """How long to wait before retrying a 423, or None not to retry: Retry-After when the server
    sends it, else a short backoff; never more than max_wait."""
    if not isinstance(err, EnvLocked):
        return None
    wait = err.retry_after if err.retry_after is not None else min(0.25 * (2 ** attempt), 5.0)
    return min(wait, max_wait)
