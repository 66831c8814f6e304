"""Command-line conventions shared by the ``extract`` and ``analyze`` CLIs.

(``schemas`` is the one package both import; nothing here knows about caches or results.)

Repeating an option must never silently keep only the last value, which is what click does
by default:

* a list option (``--scorers``, ``--temps``, ``--select-on``, ...) accumulates: every
  occurrence is a comma list, and ``--scorers msp --scorers energy`` means
  ``--scorers msp,energy`` (:func:`comma_list_option`);
* any other option given twice is a usage error (exit 2) naming it (:class:`StrictCommand`);
  a plain on/off flag given twice means the same and is accepted.

A click group whose class sets ``command_class = StrictCommand`` and ``group_class =
StrictGroup`` applies this to every command and sub-group it declares
(:class:`schemas.errors.ToolGroup` does).

A command that does work imports torch, numba, pandas and the rest inside
:func:`heavy_imports`, once it has checked its options and inputs.
"""

from __future__ import annotations

import gc
import sys
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

import click


@contextmanager
def heavy_imports() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a command imports its scoring or model stack,
    then what those imports made frozen (:func:`gc.freeze`), so that later collections skip it;
    the collector is left enabled or disabled as it was found.

    Importing ``analyze.run.driver`` (torch, numba, pandas, Zarr) makes 430,000 objects the
    collector tracks, alive for the whole process; as they grow, Python runs five full
    collections that walk all of them again: 0.4-0.8 s of its 1.8-2.6 s import on the 2-core
    machine. Nothing the imports make is garbage that only the collector could free. Where
    the block imports no new module (a process that imported them before: a test session),
    nothing is frozen."""
    enabled, modules = gc.isenabled(), len(sys.modules)
    gc.disable()
    try:
        yield
    finally:
        if len(sys.modules) > modules:
            gc.freeze()
        if enabled:
            gc.enable()


class StrictCommand(click.Command):
    """A click command that refuses a single-valued option given more than once."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:
            # a dry parse: the parser only records the options in the order given (no callbacks)
            _, _, order = self.make_parser(ctx).parse_args(args=list(args))
            seen = Counter(id(p) for p in order)
            for p in self.get_params(ctx):
                n = seen[id(p)]
                if n < 2 or not isinstance(p, click.Option) or p.multiple or p.count:
                    continue
                if p.is_flag and not p.secondary_opts:
                    continue  # --no-progress twice is still --no-progress
                raise click.UsageError(f"option {p.opts[-1]} given {n} times; give it once", ctx)
        return super().parse_args(ctx, args)


def join_list(values) -> str:
    """The comma list of every occurrence of a list option (empty items dropped)."""
    return ",".join(v.strip() for v in values if v.strip())


def comma_list_option(*decls: str, default: str = "", callback=None, **kwargs):
    """A ``click.option`` that may be repeated: its value is the comma-joined list of every
    occurrence (``--temps 0.5 --temps 1.1`` is ``"0.5,1.1"``), passed through ``callback``
    like a plain option's value; ``default`` when the option is absent."""

    def joined(ctx, param, value):
        text = join_list(value) if value else default
        return callback(ctx, param, text) if callback else text

    kwargs.setdefault("help", "")
    kwargs["help"] += " Repeat the option or give a comma list."
    return click.option(*decls, multiple=True, callback=joined, show_default=False, **kwargs)


class StrictGroup(click.Group):
    """A click sub-group whose commands and sub-groups are strict too."""

    command_class = StrictCommand
    group_class = type
