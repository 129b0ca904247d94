"""Client and AsyncClient: the fabric's REST API as typed methods."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Iterable, Optional, TypeVar, Union

import httpx

from . import _calls, models
from ._calls import Call, Requirements
from .errors import FabricError

T = TypeVar("T")

#: The address `make run` serves on.
DEFAULT_URL = "http://127.0.0.1:8080"


def _settings(url: Optional[str], token: Optional[str]) -> tuple[str, dict[str, str]]:
    url = (url or os.environ.get("ENVFABRIC_URL") or DEFAULT_URL).rstrip("/")
    token = token if token is not None else os.environ.get("ENVFABRIC_TOKEN")
    headers = {"Accept": "application/json", "User-Agent": "envfabric-python/0.1.0"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return url, headers


def _read(call: Call[T], resp: httpx.Response) -> T:
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.text
    if resp.status_code >= 400:
        raise _calls.raise_for(call, resp.status_code, body, _calls.retry_after(resp.headers.get("Retry-After")))
    return call.read(body)


class Client:
    """A client of one control plane.

    ``url`` and ``token`` default to the environment's ENVFABRIC_URL and ENVFABRIC_TOKEN (and
    ``make run``'s address). ``retry_locked`` is how many times a request answered 423
    ENV_LOCKED (another operation holds the environment) is sent again, after the Retry-After the
    server asks for (or a short backoff), each wait at most ``max_retry_wait`` seconds. ``timeout``
    bounds each HTTP request; a run's own timeout is added to it.

    Every method on one environment takes ``version_id=`` (None: the server's default, v1).
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, *, timeout: float = 600.0,
                 retry_locked: int = 0, max_retry_wait: float = 30.0,
                 transport: Optional[httpx.BaseTransport] = None) -> None:
        base, headers = _settings(url, token)
        self.url = base
        self.retry_locked = retry_locked
        self.max_retry_wait = max_retry_wait
        self.timeout = timeout
        self._http = httpx.Client(base_url=base, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            resp = self._http.request(call.method, call.path, params=call.params, json=call.json,
                                      timeout=self.timeout + call.extra_time)
            try:
                return _read(call, resp)
            except FabricError as err:
                wait = _calls.locked_wait(err, attempt, self.max_retry_wait) if attempt < self.retry_locked else None
                if wait is None:
                    raise
                attempt += 1
                time.sleep(wait)

    def create(self, workflow_id: str, node_id: str, packages: Optional[Iterable[str]] = None,
               requirements: Requirements = None, python_version: Optional[str] = None,
               version_id: Optional[str] = None) -> models.CreatedEnv:
        """Create an environment with packages (PEP 508 strings) and/or requirements (the text of a
        requirements file, or a path to one)."""
        return self._call(_calls.create(workflow_id, node_id, packages, requirements, python_version, version_id))

    def deps(self, workflow_id: str, node_id: str, version_id: Optional[str] = None) -> models.Deps:
        """Declared dependencies and every locked version."""
        return self._call(_calls.deps(workflow_id, node_id, version_id))

    def add(self, workflow_id: str, node_id: str, packages: Union[Iterable[str], str],
            version_id: Optional[str] = None) -> models.Deps:
        """uv add: add packages (or change their specifiers)."""
        return self._call(_calls.mutate("POST", workflow_id, node_id, packages, version_id))

    def remove(self, workflow_id: str, node_id: str, packages: Union[Iterable[str], str],
               version_id: Optional[str] = None) -> models.Deps:
        """uv remove."""
        return self._call(_calls.mutate("DELETE", workflow_id, node_id, packages, version_id))

    def update(self, workflow_id: str, node_id: str, packages: Union[Iterable[str], str],
               version_id: Optional[str] = None) -> models.Deps:
        """Upgrade or downgrade: a new specifier (numpy<2), or a bare name for the newest allowed."""
        return self._call(_calls.mutate("PUT", workflow_id, node_id, packages, version_id))

    def run(self, workflow_id: str, node_id: str, code: str, timeout: Optional[float] = None,
            version_id: Optional[str] = None, cold: bool = False) -> models.RunResult:
        """Run Python code in the environment. A non-zero exit is a result (``exit_code``); a run
        past its timeout raises ExecutionTimeout, whose ``result`` holds the output until then.
        ``cold=True`` asks for a fresh interpreter even where the agent has a warm one."""
        return self._call(_calls.run(workflow_id, node_id, code, timeout, version_id, cold))

    def set_preload(self, workflow_id: str, node_id: str, modules: Iterable[str],
                    version_id: Optional[str] = None) -> models.Preload:
        """Set the modules the build's warm interpreter imports before any run ([] clears)."""
        return self._call(_calls.set_preload(workflow_id, node_id, modules, version_id))

    def rollback(self, workflow_id: str, node_id: str, revision: int,
                 version_id: Optional[str] = None) -> models.RolledBack:
        """Make an earlier revision's files and build current again (as a new revision)."""
        return self._call(_calls.rollback(workflow_id, node_id, revision, version_id))

    def export(self, workflow_id: str, node_id: str, version_id: Optional[str] = None) -> models.Export:
        """pyproject.toml and uv.lock."""
        return self._call(_calls.export(workflow_id, node_id, version_id))

    def sync(self, workflow_id: str, node_id: str, version_id: Optional[str] = None) -> models.Synced:
        """Rebuild the environment from its uv.lock."""
        return self._call(_calls.sync(workflow_id, node_id, version_id))

    def status(self, workflow_id: str, node_id: str, version_id: Optional[str] = None) -> models.Status:
        return self._call(_calls.status(workflow_id, node_id, version_id))

    def delete(self, workflow_id: str, node_id: str, version_id: Optional[str] = None) -> models.Deleted:
        return self._call(_calls.delete(workflow_id, node_id, version_id))

    def list(self, workflow_id: Optional[str] = None, limit: Optional[int] = None,
             cursor: Optional[str] = None) -> models.EnvList:
        """One page of environments (of one workflow when given); pass next_cursor for the next."""
        return self._call(_calls.list_envs(workflow_id, limit, cursor))

    def operations(self, workflow_id: str, node_id: str, version_id: Optional[str] = None,
                   limit: Optional[int] = None, before: Optional[int] = None) -> models.History:
        """The environment's audit, newest first; pass next_before as before for the next page."""
        return self._call(_calls.operations(workflow_id, node_id, version_id, limit, before))

    def agents(self) -> models.Agents:
        return self._call(_calls.agents())

    def cleanup(self, dry_run: bool = False, idle_hours: Optional[float] = None) -> models.CleanupResult:
        """Remove environments idle longer than idle_hours (default CLEANUP_IDLE_HOURS); needs an admin token."""
        return self._call(_calls.cleanup(dry_run, idle_hours))


class AsyncClient:
    """Client for asyncio: the same methods, awaited."""

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, *, timeout: float = 600.0,
                 retry_locked: int = 0, max_retry_wait: float = 30.0,
                 transport: Optional[httpx.AsyncBaseTransport] = None) -> None:
        base, headers = _settings(url, token)
        self.url = base
        self.retry_locked = retry_locked
        self.max_retry_wait = max_retry_wait
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            resp = await self._http.request(call.method, call.path, params=call.params, json=call.json,
                                            timeout=self.timeout + call.extra_time)
            try:
                return _read(call, resp)
            except FabricError as err:
                wait = _calls.locked_wait(err, attempt, self.max_retry_wait) if attempt < self.retry_locked else None
                if wait is None:
                    raise
                attempt += 1
                await asyncio.sleep(wait)

    async def create(self, workflow_id: str, node_id: str, packages: Optional[Iterable[str]] = None,
                     requirements: Requirements = None, python_version: Optional[str] = None,
                     version_id: Optional[str] = None) -> models.CreatedEnv:
        return await self._call(_calls.create(workflow_id, node_id, packages, requirements, python_version, version_id))

    async def deps(self, workflow_id: str, node_id: str, version_id: Optional[str] = None) -> models.Deps:
        return await self._call(_calls.deps(workflow_id, node_id, version_id))

    async def add(self, workflow_id: str, node_id: str, packages: Union[Iterable[str], str],
                  version_id: Optional[str] = None) -> models.Deps:
        return await self._call(_calls.mutate("POST", workflow_id, node_id, packages, version_id))

    async def remove(self, workflow_id: str, node_id: str, packages: Union[Iterable[str], str],
                     version_id: Optional[str] = None) -> models.Deps:
        return await self._call(_calls.mutate("DELETE", workflow_id, node_id, packages, version_id))

    async def update(self, workflow_id: str, node_id: str, packages: Union[Iterable[str], str],
                     version_id: Optional[str] = None) -> models.Deps:
        return await self._call(_calls.mutate("PUT", workflow_id, node_id, packages, version_id))

    async def run(self, workflow_id: str, node_id: str, code: str, timeout: Optional[float] = None,
                  version_id: Optional[str] = None, cold: bool = False) -> models.RunResult:
        return await self._call(_calls.run(workflow_id, node_id, code, timeout, version_id, cold))

    async def set_preload(self, workflow_id: str, node_id: str, modules: Iterable[str],
                          version_id: Optional[str] = None) -> models.Preload:
        return await self._call(_calls.set_preload(workflow_id, node_id, modules, version_id))

    async def rollback(self, workflow_id: str, node_id: str, revision: int,
                       version_id: Optional[str] = None) -> models.RolledBack:
        return await self._call(_calls.rollback(workflow_id, node_id, revision, version_id))

    async def export(self, workflow_id: str, node_id: str, version_id: Optional[str] = None) -> models.Export:
        return await self._call(_calls.export(workflow_id, node_id, version_id))

    async def sync(self, workflow_id: str, node_id: str, version_id: Optional[str] = None) -> models.Synced:
        return await self._call(_calls.sync(workflow_id, node_id, version_id))

    async def status(self, workflow_id: str, node_id: str, version_id: Optional[str] = None) -> models.Status:
        return await self._call(_calls.status(workflow_id, node_id, version_id))

    async def delete(self, workflow_id: str, node_id: str, version_id: Optional[str] = None) -> models.Deleted:
        return await self._call(_calls.delete(workflow_id, node_id, version_id))

    async def list(self, workflow_id: Optional[str] = None, limit: Optional[int] = None,
                   cursor: Optional[str] = None) -> models.EnvList:
        return await self._call(_calls.list_envs(workflow_id, limit, cursor))

    async def operations(self, workflow_id: str, node_id: str, version_id: Optional[str] = None,
                         limit: Optional[int] = None, before: Optional[int] = None) -> models.History:
        return await self._call(_calls.operations(workflow_id, node_id, version_id, limit, before))

    async def agents(self) -> models.Agents:
        return await self._call(_calls.agents())

    async def cleanup(self, dry_run: bool = False, idle_hours: Optional[float] = None) -> models.CleanupResult:
        return await self._call(_calls.cleanup(dry_run, idle_hours))
