"""The CLI's errors: each carries the message for stderr and the exit code.

::

    CliError (1)
    ├── UsageError (2)          bad arguments the parser cannot catch
    ├── ApiError (1)            the API answered 4xx/5xx
    │   └── AuthError (3)       401/403, or no token to send
    └── Unreachable (4)         no HTTP answer at all
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130


class CliError(Exception):
    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CliError):
    exit_code = EXIT_USAGE


class ApiError(CliError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AuthError(ApiError):
    exit_code = EXIT_AUTH


class Unreachable(CliError):
    exit_code = EXIT_UNREACHABLE
