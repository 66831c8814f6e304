"""The error contract of both command lines (``extract``, ``analyze``).

Every failure a user can cause or meet is one line on stderr and a non-zero exit code:

* :class:`DataError` (exit 1): bad or damaged data, files, caches, results tables, the
  environment (disk full, read-only folder). Its subclasses name the concept
  (``CacheError``, ``ResultsError``, ``DatasetError``, ``CheckpointError``, ``ScoreError``).
* :class:`OptionError` (exit 2): an option value that cannot work (``--device cuda`` without
  CUDA); click's own usage errors exit 2 as well.
* ``OSError`` that reaches the command line is a file problem: exit 1, one line naming the file.
* Anything else is a bug or an unforeseen failure: still one line (its type and message) and
  exit 1, with a pointer to ``--debug``, which shows the traceback instead.

The message of every error names the file, cache, array, frame or option it is about.
Errors are plain one-argument exceptions so that they pickle across Dask workers.
"""

from __future__ import annotations

import functools

import click

from schemas.cli import StrictCommand, StrictGroup


class ToolError(Exception):
    """An expected failure: its message is shown as is, the process exits with ``exit_code``."""

    exit_code = 1


class DataError(ToolError):
    """Bad or damaged data, files or environment (exit 1)."""

    exit_code = 1


class OptionError(ToolError):
    """An option value that cannot work; the message names the option (exit 2)."""

    exit_code = 2


def one_line(text: object) -> str:
    """``str(text)`` (a message or an exception) with its lines joined by ``"; "`` (error messages are one line)."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def os_error_line(exc: OSError) -> str:
    """``path: reason`` for an OSError (``[Errno 28] No space left on device`` -> the reason)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{exc.filename}: {reason}" if exc.filename else reason


class _Failure(click.ClickException):
    """A one-line ``Error: ...`` (click prints it without usage lines), exit code 1; :func:`_failure`
    gives the class of another exit code."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


@functools.cache
def _failure(exit_code: int) -> type[_Failure]:
    """The :class:`_Failure` class that exits with ``exit_code`` (a class variable in click)."""
    return _Failure if exit_code == 1 else type(f"_Failure{exit_code}", (_Failure,), {"exit_code": exit_code})


def _set_debug(ctx: click.Context, param, value: bool) -> None:
    if value:
        ctx.meta["debug"] = True


class ToolGroup(click.Group):
    """A click group that runs its commands under the error contract (module docstring).

    Adds the group option ``--debug`` (``analyze --debug score ...``): unexpected errors then
    propagate with their traceback. Its commands and sub-groups refuse a single-valued option
    given twice (:class:`schemas.cli.StrictCommand`).
    """

    command_class = StrictCommand
    group_class = StrictGroup

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.append(click.Option(["--debug"], is_flag=True, expose_value=False, is_eager=True,
                                        callback=_set_debug,
                                        help="Show the traceback of an unexpected error instead of one line."))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except ToolError as exc:
            raise _failure(exc.exit_code)(str(exc)) from None
        except OSError as exc:
            raise _Failure(os_error_line(exc)) from None
        except Exception as exc:
            if ctx.meta.get("debug"):
                raise
            command = " ".join(filter(None, (self.name or ctx.info_name, "--debug", ctx.invoked_subcommand)))
            raise _Failure(f"unexpected {type(exc).__name__}: {one_line(exc) or '(no message)'} "
                           f"(rerun as `{command} ...` for the traceback)") from None
