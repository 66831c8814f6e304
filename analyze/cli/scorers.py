"""``analyze scorers``: every scorer ``--scorers`` accepts, with where it comes from."""

from __future__ import annotations

import click


@click.command("scorers")
@click.option("--check", "check", default=None, metavar="SPEC",
              help="Load these scorers (a --scorers value, e.g. mypkg.scores:my_score:alpha=0.5) and show their "
                   "declarations and records instead.")
def scorers(check):
    """List every scorer: the built-ins, then the installed plugins (entry-point group
    anomaly_seg_cache.scorers) with their module:function and distribution. 'all' means the
    built-ins only. A module:function or path/to/file.py:function is scored too (docs/plugins.md).

    \b
    Example:
      analyze scorers
      analyze scorers --check ./my_scores.py:my_score:alpha=0.5
    """
    from analyze.scorers.plugins import listing, plugin_columns
    from analyze.scorers.registry import NEEDS, T_ENTRIES, parse_spec

    if check is None:
        rows = listing()
        width = max(len(r[0]) for r in rows)
        for name, source, what in rows:
            click.echo(f"{name:<{width}}  {source:<24}  {what}")
        return
    try:
        chosen = parse_spec(check)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--check") from None
    for s in chosen:
        rec = plugin_columns(s.name)
        click.echo(f"{s.name}: {s.display}; {s.formula}; source {s.source}")
        click.echo(f"  kinds {', '.join(s.kinds)}; needs {', '.join(NEEDS[n] for n in s.needs)}; "
                   f"T enters as {T_ENTRIES[s.temperature]}"
                   + (f" ({s.plugin.temperature}{', pixelwise' if s.plugin.pixelwise else ''})" if s.plugin else ""))
        if s.param_specs:
            click.echo("  parameters " + ", ".join(f"{k}={v}" for k, v in s.params))
        if rec["scorer_plugin"]:
            click.echo(f"  rows record {rec['scorer_plugin']} version {rec['scorer_version'] or '-'} "
                       f"digest {rec['scorer_digest']}")
