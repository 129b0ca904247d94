from __future__ import annotations

import asyncio
import os
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

import envfabric
from envfabric import (
    AsyncClient,
    Client,
    DependencyNotFound,
    EnvAlreadyExists,
    EnvLocked,
    EnvNotFound,
    ExecutionTimeout,
    FabricError,
    InvalidID,
    InvalidPackages,
    PackageResolutionFailed,
    Unauthenticated,
)


def test_one_exception_per_error_code(url: str) -> None:
    doc = httpx.get(url + "/openapi.json").json()
    codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
    assert sorted(envfabric.ERRORS) == sorted(codes)
    for code, cls in envfabric.ERRORS.items():
        assert issubclass(cls, FabricError) and cls.code_name == code
        assert getattr(envfabric, cls.__name__) is cls


def test_lifecycle(fabric: Client, wf: str) -> None:
    created = fabric.create(wf, "a", packages=["beta>=1", "delta==0.1.0"])
    assert isinstance(created, envfabric.CreatedEnv)
    assert (created.workflow_id, created.node_id, created.version_id, created.status) == (wf, "a", "v1", "created")
    assert created.revision == 1 and created.operation_id > 0 and created.packages_installed == 3
    assert 'name = "' in created.pyproject_toml and created.python_version == "3.11"

    deps = fabric.deps(wf, "a")
    assert deps.locked_versions == {"alpha": "2.0.0", "beta": "2.0.0", "delta": "0.1.0"}
    assert deps.dependencies[1] == "delta==0.1.0" and deps.dependencies[0].startswith("beta")

    added = fabric.add(wf, "a", ["gamma"])  # gamma needs alpha<1.1: uv moves beta and alpha down
    assert added.locked_versions["alpha"] == "1.0.0" and added.locked_versions["beta"] == "1.0.0"
    assert added.revision == 2 and added.operation_id is not None
    updated = fabric.update(wf, "a", "delta==0.2.0")
    assert updated.locked_versions["delta"] == "0.2.0"
    removed = fabric.remove(wf, "a", ["gamma"])
    assert "gamma" not in removed.locked_versions
    assert not any(d.startswith("gamma") for d in removed.dependencies)

    r = fabric.run(wf, "a", "import alpha, sys\nprint(alpha.__version__)\nprint('warn', file=sys.stderr)\nsys.exit(3)",
                   timeout=30)
    assert isinstance(r, envfabric.RunResult)
    assert r.stdout == removed.locked_versions["alpha"] + "\n" and r.stderr == "warn\n"
    assert r.exit_code == 3 and not r.timed_out and not r.ok and r.exit_reason == "exited"
    assert r.duration_ms >= 0 and r.revision == removed.revision

    back = fabric.rollback(wf, "a", removed.revision - 1)  # to the update: gamma again
    assert isinstance(back, envfabric.RolledBack) and back.rolled_back_to == removed.revision - 1
    assert back.locked_versions == updated.locked_versions and back.revision == removed.revision + 1
    fabric.remove(wf, "a", ["gamma"])

    exported = fabric.export(wf, "a")
    assert "[[package]]" in exported.uv_lock and "delta==0.2.0" in exported.pyproject_toml
    synced = fabric.sync(wf, "a")
    assert synced.status == "synced" and synced.packages_installed == 3

    st = fabric.status(wf, "a")
    assert st.exists and st.state in ("ACTIVE", "IDLE") and isinstance(st.last_used_at, datetime)
    assert st.disk is not None and st.disk.venv and st.disk.files_match_revision and st.in_step

    history = fabric.operations(wf, "a")
    kinds = [op.operation for op in history.operations]
    assert kinds[:4] == ["sync", "remove", "rollback", "run"] and kinds[-1] == "create"
    assert all(isinstance(op, envfabric.Operation) and isinstance(op.started_at, datetime) for op in history.operations)
    page = fabric.operations(wf, "a", limit=2)
    assert len(page.operations) == 2 and page.next_before is not None
    rest = fabric.operations(wf, "a", before=page.next_before)
    assert [op.id for op in page.operations + rest.operations] == [op.id for op in history.operations]

    deleted = fabric.delete(wf, "a")
    assert deleted.status == "deleted"
    with pytest.raises(EnvNotFound) as e:
        fabric.status(wf, "a")
    assert e.value.code == "ENV_NOT_FOUND" and e.value.status == 404 and e.value.message and e.value.request_id


def test_output_that_is_not_text(fabric: Client, wf: str) -> None:
    fabric.create(wf, "bin")
    r = fabric.run(wf, "bin", "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe ok')\nsys.stderr.buffer.write(b'caf\\xc3\\xa9')")
    assert r.stdout_encoding == "base64" and r.stdout_bytes == b"\xff\xfe ok"
    assert r.stdout == "\ufffd\ufffd ok"
    assert r.stderr_encoding == "utf-8" and r.stderr == "café" and r.stderr_bytes == "café".encode()


def test_timeout(fabric: Client, wf: str) -> None:
    fabric.create(wf, "slow")
    with pytest.raises(ExecutionTimeout) as e:
        fabric.run(wf, "slow", "import time\nprint('started', flush=True)\ntime.sleep(60)", timeout=1)
    result = e.value.result
    assert isinstance(result, envfabric.RunResult)
    assert result.timed_out and result.stdout == "started\n" and result.duration_ms >= 1000


def test_versions_and_requirements(fabric: Client, wf: str, tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("alpha==1.1.0\n")
    fabric.create(wf, "n", requirements=reqs)
    fabric.create(wf, "n", requirements="alpha==1.0.0\n", version_id="v2", python_version="3.11")
    assert fabric.deps(wf, "n").locked_versions == {"alpha": "1.1.0"}
    assert fabric.deps(wf, "n", version_id="v2").locked_versions == {"alpha": "1.0.0"}
    fabric.add(wf, "n", ["delta"], version_id="v2")
    fabric.update(wf, "n", ["delta==0.1.0"], version_id="v2")
    assert fabric.run(wf, "n", "import delta; print(delta.__version__)", version_id="v2").stdout == "0.1.0\n"
    fabric.remove(wf, "n", ["delta"], version_id="v2")
    assert fabric.export(wf, "n", version_id="v2").revision == 4
    assert fabric.sync(wf, "n", version_id="v2").version_id == "v2"
    assert fabric.status(wf, "n", version_id="v2").version_id == "v2"
    assert len(fabric.operations(wf, "n", version_id="v2").operations) == 6
    listed = fabric.list(workflow_id=wf)
    assert sorted((e.node_id, e.version_id) for e in listed.environments) == [("n", "v1"), ("n", "v2")]
    first = fabric.list(workflow_id=wf, limit=1)
    assert first.next_cursor is not None
    second = fabric.list(workflow_id=wf, limit=1, cursor=first.next_cursor)
    assert [e.version_id for e in first.environments + second.environments] == ["v1", "v2"]
    fabric.delete(wf, "n", version_id="v2")
    assert [e.version_id for e in fabric.list(workflow_id=wf).environments] == ["v1"]


def test_preload_and_cold_runs(fabric: Client, wf: str) -> None:
    fabric.create(wf, "warm", packages=["alpha"])
    set_ = fabric.set_preload(wf, "warm", ["alpha", "json", "alpha"])
    assert set_.preload == ["alpha", "json"] and set_.operation_id > 0
    assert fabric.status(wf, "warm").preload == ["alpha", "json"]
    with pytest.raises(envfabric.InvalidRequest):
        fabric.set_preload(wf, "warm", ["os; import shutil"])
    assert fabric.status(wf, "warm").preload == ["alpha", "json"]  # the refused list changed nothing
    cold = fabric.run(wf, "warm", "import alpha; print(alpha.__version__)", cold=True)
    assert cold.ok and not cold.warm
    assert fabric.set_preload(wf, "warm", []).preload == []
    assert [o.operation for o in fabric.operations(wf, "warm").operations][:3] == ["preload", "run", "preload"]


def test_errors(fabric: Client, url: str, wf: str) -> None:
    fabric.create(wf, "e", packages=["alpha"])
    with pytest.raises(EnvAlreadyExists):
        fabric.create(wf, "e")
    with pytest.raises(InvalidID):
        fabric.create("../etc", "e")
    with pytest.raises(InvalidPackages):
        fabric.add(wf, "e", ["--index-url=http://example.invalid"])
    with pytest.raises(PackageResolutionFailed) as resolution:
        fabric.add(wf, "e", ["alpha>=9"])
    assert "uv_output" in resolution.value.details
    with pytest.raises(DependencyNotFound):
        fabric.remove(wf, "e", ["epsilon"])
    with Client(url, "not-a-token") as stranger, pytest.raises(Unauthenticated):
        stranger.list()
    reader = os.environ.get("ENVFABRIC_READ_TOKEN")
    if reader:
        with Client(url, reader) as c, pytest.raises(envfabric.Forbidden):
            c.delete(wf, "e")
    # Every failure left the environment as it was.
    assert fabric.deps(wf, "e").revision == 1


def test_locked_and_retried(fabric: Client, url: str, wf: str) -> None:
    """A mutation while another holds the environment is refused with 423 and the server's
    Retry-After; with retry_locked the client waits and goes through once the first is done. The
    Go side stalls the index on ENVFABRIC_STALLED_PACKAGE until ENVFABRIC_RELEASE_FILE exists."""
    stalled, release = os.environ.get("ENVFABRIC_STALLED_PACKAGE"), os.environ.get("ENVFABRIC_RELEASE_FILE")
    if not stalled or not release:
        pytest.skip("needs the index stall of controlplane/e2e/pysdk_test.go")
    fabric.create(wf, "busy", packages=["alpha==1.0.0"])
    first: list[envfabric.Deps] = []

    def hold() -> None:
        with Client(url, os.environ.get("ENVFABRIC_TOKEN")) as c:
            first.append(c.add(wf, "busy", [stalled]))

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        deadline = time.monotonic() + 60
        while "add" not in fabric.status(wf, "busy").operations_in_progress:
            assert time.monotonic() < deadline, "the first add never started"
            time.sleep(0.05)
        with pytest.raises(EnvLocked) as locked:
            fabric.add(wf, "busy", ["delta"])
        assert locked.value.status == 423 and locked.value.details["held_by"]["operation"] == "add"
        assert locked.value.retry_after is not None and locked.value.retry_after >= 1
        Path(release).touch()  # the index answers; the first add finishes
        with Client(url, os.environ.get("ENVFABRIC_TOKEN"), retry_locked=200, max_retry_wait=0.5) as patient:
            added = patient.add(wf, "busy", ["delta"])
    finally:
        Path(release).touch()
        holder.join()
    assert first and stalled in first[0].locked_versions
    assert stalled in added.locked_versions and "delta" in added.locked_versions


def test_retry_after_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait between retries is the server's Retry-After (the fabric's 423 may carry one)."""
    answers = [
        httpx.Response(423, headers={"Retry-After": "2"}, json={"error": {
            "code": "ENV_LOCKED", "message": "held", "request_id": "r1", "held_by": {"operation": "add"}}}),
        httpx.Response(200, json={"workflow_id": "wf", "node_id": "n", "version_id": "v1", "dependencies": [],
                                  "locked_versions": {}, "revision": 2}),
    ]
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    transport = httpx.MockTransport(lambda request: answers.pop(0))
    with Client("http://fabric.invalid", retry_locked=3, transport=transport) as c:
        assert c.add("wf", "n", ["x"]).revision == 2
    assert waits == [2.0]
    with Client("http://fabric.invalid", transport=httpx.MockTransport(lambda r: httpx.Response(
            423, headers={"Retry-After": "1"}, json={"error": {"code": "ENV_LOCKED", "message": "m", "request_id": "r"}}))) as c:
        with pytest.raises(EnvLocked) as e:
            c.sync("wf", "n")
    assert e.value.retry_after == 1.0


def test_async_client(url: str, wf: str) -> None:
    async def flow() -> None:
        async with AsyncClient(url, os.environ.get("ENVFABRIC_TOKEN")) as c:
            await c.create(wf, "x", packages=["alpha==1.0.0"])
            await c.create(wf, "y", packages=["alpha==2.0.0"])
            rx, ry = await asyncio.gather(c.run(wf, "x", "import alpha; print(alpha.__version__)"),
                                          c.run(wf, "y", "import alpha; print(alpha.__version__)"))
            assert (rx.stdout, ry.stdout) == ("1.0.0\n", "2.0.0\n")
            assert (await c.update(wf, "x", ["alpha==1.1.0"])).locked_versions == {"alpha": "1.1.0"}
            assert (await c.add(wf, "x", ["delta"])).locked_versions["delta"] == "0.2.0"
            assert (await c.remove(wf, "x", ["delta"])).locked_versions == {"alpha": "1.1.0"}
            assert (await c.deps(wf, "y")).locked_versions == {"alpha": "2.0.0"}
            assert "alpha==2.0.0" in (await c.export(wf, "y")).pyproject_toml
            assert (await c.sync(wf, "y")).status == "synced"
            assert (await c.status(wf, "y")).exists
            assert len((await c.list(workflow_id=wf)).environments) == 2
            assert (await c.operations(wf, "x")).operations[0].operation == "remove"
            assert (await c.agents()).mode == "single-host"
            with pytest.raises(EnvNotFound):
                await c.run(wf, "nope", "print(1)")
            await c.delete(wf, "x")
            await c.delete(wf, "y")

    asyncio.run(flow())


def test_agents_and_cleanup(fabric: Client) -> None:
    agents = fabric.agents()
    assert agents.mode == "single-host" and len(agents.agents) == 1
    agent = agents.agents[0]
    assert agent.state == "alive" and agent.reachable and agent.interpreters[0].version.startswith("3.11")
    dry = fabric.cleanup(dry_run=True, idle_hours=1000)
    assert dry.dry_run and dry.removed == [] and dry.idle_hours == 1000.0
