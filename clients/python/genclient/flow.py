"""The end-to-end flow through a client generated from the fabric's own /openapi.json
(openapi-python-client; controlplane/e2e/pysdk_test.go generates the fabric_api package and
runs this with ENVFABRIC_URL and ENVFABRIC_TOKEN set). Every answer must parse into the typed model
the document names, with attribute access; the test also checks this file with mypy --strict
against the generated package, so a field the document leaves out or mistypes fails here.
"""

from __future__ import annotations

import base64
import datetime
import os
import sys
from typing import TypeVar

from fabric_api import AuthenticatedClient
from fabric_api.api.default import (
    add_deps,
    agents,
    cleanup,
    create_env,
    delete_env,
    env_status,
    export_env,
    get_deps,
    list_envs,
    operations,
    remove_deps,
    run,
    sync_env,
    update_deps,
)
from fabric_api.models import (
    Agents,
    CleanupBody,
    CleanupResult,
    CreatedEnv,
    CreateJSON,
    Deleted,
    Deps,
    EnvList,
    EnvStatus,
    Error,
    ErrorErrorCode,
    Export,
    Operations,
    PackagesBody,
    RunBody,
    RunResult,
    RunResultStdoutEncoding,
    Synced,
    Versioned,
)
from fabric_api.types import Unset

T = TypeVar("T")


def want(cls: type[T], got: object, what: str) -> T:
    if not isinstance(got, cls):
        sys.exit(f"{what}: got {got!r}; want a {cls.__name__}")
    return got


def main() -> None:
    c = AuthenticatedClient(base_url=os.environ["ENVFABRIC_URL"], token=os.environ["ENVFABRIC_TOKEN"],
                            raise_on_unexpected_status=True, timeout=None)
    wf, node = "generated", "n"

    created = want(CreatedEnv, create_env.sync(client=c, body=CreateJSON(
        workflow_id=wf, node_id=node, packages=["beta>=1", "delta==0.1.0"])), "create")
    assert created.status == "created" and created.revision == 1 and created.operation_id > 0, created
    assert created.packages == ["beta>=1", "delta==0.1.0"] and created.host_constraints_applied == []

    deps = want(Deps, get_deps.sync(wf, node, client=c), "deps")
    assert deps.locked_versions.additional_properties == {"alpha": "2.0.0", "beta": "2.0.0", "delta": "0.1.0"}
    assert deps.revision == 1 and isinstance(deps.operation_id, Unset)

    added = want(Deps, add_deps.sync(wf, node, client=c, body=PackagesBody(packages=["gamma"])), "add")
    assert added.locked_versions["alpha"] == "1.0.0" and added.revision == 2
    assert isinstance(added.operation_id, int) and isinstance(added.status, str)
    updated = want(Deps, update_deps.sync(wf, node, client=c, body=PackagesBody(packages=["delta==0.2.0"])), "update")
    assert updated.locked_versions["delta"] == "0.2.0"
    removed = want(Deps, remove_deps.sync(wf, node, client=c, body=PackagesBody(packages=["gamma"])), "remove")
    assert "gamma" not in removed.locked_versions.additional_properties

    ran = want(RunResult, run.sync(wf, node, client=c, body=RunBody(
        code="import sys, alpha\nprint(alpha.__version__)\nsys.stdout.flush()\nsys.stderr.buffer.write(b'\\xff')\nsys.exit(2)",
        timeout=30)), "run")
    assert ran.stdout == removed.locked_versions["alpha"] + "\n" and ran.exit_code == 2 and not ran.timed_out
    assert ran.stderr_encoding == RunResultStdoutEncoding.BASE64.value and base64.b64decode(ran.stderr) == b"\xff"
    assert ran.revision == removed.revision and ran.operation_id > 0 and not ran.stdout_truncated

    timed_out = want(Error, run.sync(wf, node, client=c, body=RunBody(
        code="import time\nprint('partial', flush=True)\ntime.sleep(60)", timeout=1)), "run past its timeout")
    assert timed_out.error.code == ErrorErrorCode.EXECUTION_TIMEOUT and timed_out.error.stdout == "partial\n"
    assert isinstance(timed_out.error.duration_ms, int) and timed_out.error.request_id

    exported = want(Export, export_env.sync(wf, node, client=c), "export")
    assert "[[package]]" in exported.uv_lock and "delta==0.2.0" in exported.pyproject_toml
    synced = want(Synced, sync_env.sync(wf, node, client=c, body=Versioned()), "sync")
    assert synced.status == "synced" and synced.packages_installed == 3

    status = want(EnvStatus, env_status.sync(wf, node, client=c), "status")
    assert status.exists and status.in_step and isinstance(status.checked_at, datetime.datetime)
    assert not isinstance(status.disk, Unset) and status.disk.venv_in_sync and status.disk.packages_installed == 3

    page = want(EnvList, list_envs.sync(client=c, workflow_id=wf, limit=10), "list")
    assert [(e.node_id, e.state) for e in page.environments] == [(node, status.state)]
    assert isinstance(page.environments[0].last_used_at, datetime.datetime)

    history = want(Operations, operations.sync(wf, node, client=c), "operations")
    assert [o.operation for o in history.operations][:2] == ["sync", "run"]
    assert all(o.status in ("succeeded", "failed") and isinstance(o.started_at, datetime.datetime)
               for o in history.operations)

    fleet = want(Agents, agents.sync(client=c), "agents")
    assert fleet.mode.value == "single-host" and fleet.agents[0].interpreters[0].version.startswith("3.11")

    dry = want(CleanupResult, cleanup.sync(client=c, body=CleanupBody(dry_run=True, idle_hours=1000)), "cleanup")
    assert dry.dry_run and dry.removed == []

    missing = want(Error, get_deps.sync(wf, "nope", client=c), "deps of a missing environment")
    assert missing.error.code == ErrorErrorCode.ENV_NOT_FOUND and missing.error.message

    deleted = want(Deleted, delete_env.sync(wf, node, client=c), "delete")
    assert deleted.status == "deleted" and deleted.bytes_freed >= 0
    print("generated client: flow passed")


if __name__ == "__main__":
    main()
