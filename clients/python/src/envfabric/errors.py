"""The fabric's errors as exceptions: one class per error code, all subclasses of FabricError.

Every error answer of the API has the body ``{"error": {"code", "message", "request_id", ...}}``;
the client raises the class named for its code (``ENV_NOT_FOUND`` → :class:`EnvNotFound`), with
the other fields of the body in :attr:`FabricError.details`.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type


class FabricError(Exception):
    """An error answer of the fabric (or, with code ``None``, an answer that is not one)."""

    #: The error code this class stands for; FabricError itself stands for codes this client
    #: does not know yet.
    code_name: Optional[str] = None

    def __init__(
        self,
        code: Optional[str],
        message: str,
        *,
        request_id: str = "",
        status: int = 0,
        details: Optional[Mapping[str, Any]] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.status = status
        self.details: Dict[str, Any] = dict(details or {})
        #: Seconds the server asked to wait before retrying (the Retry-After header), if any.
        self.retry_after = retry_after


class InvalidPackages(FabricError):
    """400: a package specification is invalid."""

    code_name = "INVALID_PACKAGES"


class EnvNotFound(FabricError):
    """404: no such environment."""

    code_name = "ENV_NOT_FOUND"


class EnvAlreadyExists(FabricError):
    """409: the environment exists."""

    code_name = "ENV_ALREADY_EXISTS"


class PackageResolutionFailed(FabricError):
    """422: uv could not resolve the dependencies (``details["uv_output"]`` says why)."""

    code_name = "PACKAGE_RESOLUTION_FAILED"


class PackageDenied(FabricError):
    """422: the resolved lock holds a version PACKAGE_POLICY denies (``details["denied"]`` names the rule)."""

    code_name = "PACKAGE_DENIED"


class EnvLocked(FabricError):
    """423: another operation holds the environment (``details["held_by"]`` names it)."""

    code_name = "ENV_LOCKED"


class DBAuditError(FabricError):
    """500: the audit database is unreachable or the audit write failed; nothing was done."""

    code_name = "DB_AUDIT_ERROR"


class UVExecutionError(FabricError):
    """500: a uv command failed."""

    code_name = "UV_EXECUTION_ERROR"


class ExecutionTimeout(FabricError):
    """504: the code ran past its timeout. :attr:`result` holds what it printed until then."""

    code_name = "EXECUTION_TIMEOUT"
    #: The partial run (``timed_out`` is True), set by the client's ``run``.
    result: Any = None


class InvalidID(FabricError):
    """400: a workflow, node or version id is not a valid id."""

    code_name = "INVALID_ID"


class InvalidRequest(FabricError):
    """400: the request is malformed (unknown field, bad value, ...)."""

    code_name = "INVALID_REQUEST"


class DependencyNotFound(FabricError):
    """404: a package to remove or update is not a dependency of the environment."""

    code_name = "DEPENDENCY_NOT_FOUND"


class EnvNotReady(FabricError):
    """409: the environment is not in a state that allows the operation."""

    code_name = "ENV_NOT_READY"


class PythonUnavailable(FabricError):
    """422: the requested Python version cannot be had."""

    code_name = "PYTHON_UNAVAILABLE"


class RequestTooLarge(FabricError):
    """413: the body, the code or the requirements file is over its limit."""

    code_name = "REQUEST_TOO_LARGE"


class NotFound(FabricError):
    """404: no such route."""

    code_name = "NOT_FOUND"


class MethodNotAllowed(FabricError):
    """405: the route does not allow this method."""

    code_name = "METHOD_NOT_ALLOWED"


class AgentUnavailable(FabricError):
    """503: the agent failed or is unreachable."""

    code_name = "AGENT_UNAVAILABLE"


class NoAgentAvailable(FabricError):
    """503: no live agent can serve the operation."""

    code_name = "NO_AGENT_AVAILABLE"


class InternalError(FabricError):
    """500: an internal error of the fabric."""

    code_name = "INTERNAL_ERROR"


class SourceBuildDisabled(FabricError):
    """422: the agent installs wheels only, and a package has only a source distribution."""

    code_name = "SOURCE_BUILD_DISABLED"


class Unauthenticated(FabricError):
    """401: no bearer token, or not a configured one."""

    code_name = "UNAUTHENTICATED"


class Forbidden(FabricError):
    """403: the token's role does not allow this."""

    code_name = "FORBIDDEN"


class UnsupportedMediaType(FabricError):
    """415: a body in a media type the endpoint does not read."""

    code_name = "UNSUPPORTED_MEDIA_TYPE"


class BuildMissing(FabricError):
    """503: the build a run needed is not complete on the shared storage (it is being made again)."""

    code_name = "BUILD_MISSING"


class RequestTimeout(FabricError):
    """408: the body did not arrive in time."""

    code_name = "REQUEST_TIMEOUT"


#: Error code → exception class, for every code the fabric documents.
ERRORS: Dict[str, Type[FabricError]] = {
    cls.code_name: cls
    for cls in FabricError.__subclasses__()
    if cls.code_name is not None
}


def error_for(
    status: int,
    body: Any,
    *,
    retry_after: Optional[float] = None,
) -> FabricError:
    """The exception for an error answer: the class of its code, or FabricError."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict) or not isinstance(err.get("code"), str):
        return FabricError(None, f"HTTP {status}: the answer is not the fabric's error body: {body!r:.300}",
                           status=status, retry_after=retry_after)
    code = str(err["code"])
    details = {k: v for k, v in err.items() if k not in ("code", "message", "request_id")}
    cls = ERRORS.get(code, FabricError)
    return cls(code, str(err.get("message", "")), request_id=str(err.get("request_id", "")),
               status=status, details=details, retry_after=retry_after)
