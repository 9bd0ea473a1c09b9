"""The ``gdfree`` command line: each command is a thin adapter over library functions (parse, build a config,
call one function), and every command maps errors to exit codes the same way (:func:`gdfree.cli.common.command`).

Heavy libraries are imported inside the commands so that ``gdfree --help`` stays instant. The commands live in
:mod:`gdfree.cli.data` (datasets and images), :mod:`gdfree.cli.models` (training and applying models) and
:mod:`gdfree.cli.results` (scores, reports, the machine).
"""

from __future__ import annotations

from gdfree.cli import data, models, results  # noqa: F401  (registers the commands, in the order of --help)
from gdfree.cli.common import app, fail

__all__ = ["app", "main"]


def main() -> None:
    """Run the app; an error no command anticipated is reported in one line (exit 3), never as a traceback."""
    try:
        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except OSError as exc:  # a full disk, a read-only folder, a vanished file
        fail(f"{exc.filename or ''} {exc.strerror or exc}".strip())
        raise SystemExit(2) from None
    except Exception as exc:
        fail(f"unexpected {type(exc).__name__}: {exc}; please report it with the command that raised it")
        raise SystemExit(3) from None


if __name__ == "__main__":
    main()
