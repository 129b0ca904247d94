"""Environment Fabric's Python client: one reproducible uv environment per workflow node.

    from envfabric import Client
    fabric = Client("http://127.0.0.1:8080")
    fabric.create("wf", "node", packages=["numpy<2"])
    print(fabric.run("wf", "node", "import numpy; print(numpy.__version__)").stdout)
"""

from .client import DEFAULT_URL, AsyncClient, Client
from .errors import (
    ERRORS,
    FabricError,
    AgentUnavailable,
    BuildMissing,
    DBAuditError,
    DependencyNotFound,
    EnvAlreadyExists,
    EnvLocked,
    EnvNotFound,
    EnvNotReady,
    ExecutionTimeout,
    Forbidden,
    InternalError,
    InvalidID,
    InvalidPackages,
    InvalidRequest,
    MethodNotAllowed,
    NoAgentAvailable,
    NotFound,
    PackageDenied,
    PackageResolutionFailed,
    PythonUnavailable,
    RequestTimeout,
    RequestTooLarge,
    SourceBuildDisabled,
    UVExecutionError,
    Unauthenticated,
    UnsupportedMediaType,
)
from .models import (
    Agent,
    Agents,
    Build,
    BuildEntry,
    CleanupEntry,
    CleanupResult,
    CreatedEnv,
    Deleted,
    Deps,
    Disk,
    EnvList,
    EnvView,
    Export,
    History,
    HostConstraint,
    Interpreter,
    Operation,
    PackageDamage,
    Preload,
    RolledBack,
    RunResult,
    Status,
    Synced,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL", "AsyncClient", "Client", "ERRORS", "FabricError",
    "Agent", "Agents", "Build", "BuildEntry", "CleanupEntry", "CleanupResult", "CreatedEnv", "Deleted", "Deps", "Disk", "EnvList",
    "EnvView", "Export", "History", "HostConstraint", "Interpreter", "Operation", "PackageDamage", "Preload", "RolledBack", "RunResult", "Status", "Synced",
    # one exception per error code
    "AgentUnavailable",
    "BuildMissing",
    "DBAuditError",
    "DependencyNotFound",
    "EnvAlreadyExists",
    "EnvLocked",
    "EnvNotFound",
    "EnvNotReady",
    "ExecutionTimeout",
    "Forbidden",
    "InternalError",
    "InvalidID",
    "InvalidPackages",
    "InvalidRequest",
    "MethodNotAllowed",
    "NoAgentAvailable",
    "NotFound",
    "PackageDenied",
    "PackageResolutionFailed",
    "PythonUnavailable",
    "RequestTimeout",
    "RequestTooLarge",
    "SourceBuildDisabled",
    "UVExecutionError",
    "Unauthenticated",
    "UnsupportedMediaType",
]
