"""Docker's errors, translated where they enter our code (STYLE.md practice 2)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker.errors
import requests.exceptions

from shared.errors import ContainerError, LMStackError, RuntimeUnavailable


class DeployFailed(Exception):
    """Internal: a deploy step failed; the message is what the controller sees."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)


def translate(exc: Exception) -> LMStackError | None:
    """Our error for a Docker/transport error; ``None`` when ``exc`` is not one."""
    if isinstance(exc, LMStackError):
        return exc
    if isinstance(exc, requests.exceptions.ConnectionError):
        return RuntimeUnavailable(f"Docker engine not reachable: {exc}")
    if isinstance(exc, requests.exceptions.Timeout):
        return ContainerError(f"Docker engine did not answer in time: {exc}")
    if isinstance(exc, docker.errors.APIError):
        return ContainerError(explain(exc))
    if isinstance(exc, docker.errors.DockerException):
        return ContainerError(str(exc))
    return None


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise a Docker/transport error from the block as ours (``raise ... from``)."""
    try:
        yield
    except Exception as exc:
        ours = translate(exc)
        if ours is None or ours is exc:
            raise
        raise ours from exc
