"""What every command shares: the typer app, one error-to-exit mapping (:func:`command`), the console and the
help texts of options that recur."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from gdfree.errors import GdfreeError

__all__ = ["FORMAT_HELP", "SHARD_HELP", "USER_ERRORS", "account", "app", "command", "exit_on_failures", "fail",
           "new_console", "split"]  # fmt: skip


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Predict the MS lesions that would enhance after gadolinium, from pre-contrast MRI.",
)


FORMAT_HELP = "Layout: auto, bids, open_ms_data, msseg2016, isbi2015, miccai2008 or shifts2022."


SHARD_HELP = (
    "K/N: only the cases of part K of N (a stable split by case id); N jobs may share one --out and "
    "together write what one run would."
)


def new_console() -> Any:
    from rich.console import Console

    return Console()


def fail(message: str) -> typer.Exit:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code=2)


USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, GdfreeError)
"""What a command reports as one line naming the file or option (exit 2): bad input or options, not a bug."""


def command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``app.command`` whose errors of :data:`USER_ERRORS` become one ``error:`` line and exit code 2: the one
    error-to-exit mapping of every command (an unforeseen error: :func:`main`, exit 3)."""

    def register(function: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(function)
        def run(*a: Any, **k: Any) -> None:
            try:
                function(*a, **k)
            except USER_ERRORS as exc:
                raise fail(str(exc)) from exc

        return app.command(*args, **kwargs)(run)

    return register


def exit_on_failures(console: Any, failures: dict[str, str], what: str) -> None:
    """Print each failed case and its reason, then exit 1; nothing when no case failed."""
    if not failures:
        return
    for case_id, reason in failures.items():
        console.print(f"failed: {case_id}: {reason}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"{len(failures)} cases {what}.", highlight=False, markup=False)
    raise typer.Exit(code=1)


def account(
    console: Any, dataset: Path, fmt: str, out: Path | None, *, within: Path | None = None, cases: Any = None
) -> int:
    """Print what in ``dataset`` looks like a case but is not one, with the reason
    (:func:`gdfree.io.accounting.not_cases`; only under ``within``, a sub-X or sub-X/ses-Y folder, when given;
    ``cases``: the dataset's discovered cases when at hand), write them to ``out/not_cases.tsv`` (``out`` None:
    nowhere) and return how many."""
    from gdfree.io.accounting import NOT_CASES, not_cases, write_not_cases

    found = not_cases(dataset, fmt, cases)
    if within is not None:
        rel = Path(within).resolve().relative_to(Path(dataset).resolve()).as_posix()
        found = [n for n in found if n.path == rel or n.path.startswith(rel + "/")]
    if out is not None:
        write_not_cases(out, found)
    for item in found:
        console.print(f"not a case: {item.path}: {item.reason}", highlight=False, markup=False, soft_wrap=True)
    if found:
        where = f" (listed in {Path(out) / NOT_CASES})" if out is not None else ""
        console.print(f"{len(found)} folders or files of {dataset} look like cases but are not{where}.",
                      highlight=False, markup=False)  # fmt: skip
    return len(found)


def split(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(t.strip() for t in text.split(",") if t.strip())
