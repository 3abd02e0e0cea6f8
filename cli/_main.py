"""Entry point: parse, run the handler, map errors to messages and exit codes."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cli._commands import Context
from cli._errors import EXIT_INTERRUPTED, CliError
from cli._parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(Context(args))
    except CliError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `lmstack ... | head`: the reader went away; nothing left to say.
        sys.stderr.close()
        return 0
    return code
