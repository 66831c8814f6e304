"""`analyze`: score cached model outputs offline and turn results into tables and figures.

Commands only wire arguments; the work is in analyze.driver, analyze.report,
analyze.temperature, analyze.maps and analyze.inspect.
"""

from __future__ import annotations

import sys

import click

from schemas.cache import CacheError, open_cache
from schemas.results import ResultsError


class _Group(click.Group):
    """Turns the tool's user-facing errors into one-line messages with exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (CacheError, ResultsError, FileNotFoundError, PermissionError) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.version_option(package_name="anomaly-seg-cache")
def main():
    """Score every anomaly scorer on cached model outputs; report tables and figures.

    \b
    Example:
      analyze score --cache caches/eomt/road_anomaly.zarr --scorers all --temps 0.5,0.75,1.1
    """


@main.command()
@click.argument("cache")
@click.option("--verify", is_flag=True, help="Read every chunk and check its crc32c checksum.")
def inspect(cache, verify):
    """Print a summary of CACHE and validate it against the schema.

    \b
    Example:
      analyze inspect caches/erfnet/fs_static.zarr --verify
    """
    from analyze import inspect as insp

    root, spec = open_cache(cache)
    for line in insp.summary(root, spec, cache):
        click.echo(line)
    if verify:
        problems = insp.verify(root, spec)
        for p in problems:
            click.echo(f"error: {cache}: {p}", err=True)
        if problems:
            raise click.ClickException(f"{cache}: {len(problems)} corrupt chunk(s)")
        click.echo("verify     all chunks intact (crc32c)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
