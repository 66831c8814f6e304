"""``analyze compare``: paired frame-bootstrap differences between cells of one results file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import click

if TYPE_CHECKING:
    import pandas as pd

CELL_FIELDS = {"run": "run", "model": "model", "dataset": "dataset", "t": "temperature", "target": "temp_target",
               "protocol": "protocol", "frames": "frames"}


def parse_cell(spec: str) -> dict:
    """``SCORER[,t=T][,run=RUN][,model=M][,dataset=D][,target=TT][,protocol=P][,frames=F]`` as a dict
    of key columns (T defaults to 1); ValueError saying what is wrong."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts or "=" in parts[0]:
        raise ValueError(f"cell {spec!r} must start with a scorer name (e.g. msp,t=0.5,model=eomt)")
    out: dict = {"scorer": parts[0], "temperature": 1.0}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        if k.lower() not in CELL_FIELDS or not v:
            raise ValueError(f"cell {spec!r}: {p!r} is not one of {', '.join(f + '=' for f in CELL_FIELDS)}")
        field = CELL_FIELDS[k.lower()]
        try:
            out[field] = float(v) if field == "temperature" else v
        except ValueError:
            raise ValueError(f"cell {spec!r}: T {v!r} is not a number") from None
    return out


def resolve(spec: dict, cells: Sequence[tuple], text: str) -> tuple:
    """The one kept cell matching ``spec``; ResultsError naming the candidates otherwise."""
    from analyze.compare.cells import describe
    from schemas.results import ResultsError
    from schemas.side_tables import SIDE_KEY

    def ok(c: tuple) -> bool:
        d = dict(zip(SIDE_KEY, c))
        return all(abs(d[k] - v) < 1e-9 if k == "temperature" else d[k] == v for k, v in spec.items())

    found = [c for c in cells if ok(c)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ResultsError(f"--cell {text}: no scored cell with per-frame data matches (cells with data: "
                           f"{len(cells)}; score with `analyze score --bootstrap N` to keep it)")
    raise ResultsError(f"--cell {text} matches {len(found)} cells ({describe(found[0])}; {describe(found[1])}"
                       f"{'; ...' if len(found) > 2 else ''}); add run=, model=, dataset=, target= or frames=")


def pair_table(rows: pd.DataFrame) -> str:
    """The printed table: one line per pair and metric, values and differences in percentage points."""
    def side(r, s):
        return f"{r[f'model_{s}']}/{r[f'scorer_{s}']} T={float(r[f'temperature_{s}']):g}"

    def p_text(r) -> str:  # no resample crossed 0: p is below the resolution 2 / R
        return f"<{2 / r['n_resamples']:.2g}" if r["p_value"] == 0 else f"{r['p_value']:.3f}"

    level = f"{100 * rows['level'].iloc[0]:g}% interval" if len(rows) else "interval"
    lines = [f"{'metric':<7} {'A':<28} {'B':<28} {'A %':>7} {'B %':>7} {'A-B':>7} {level:>17} {'p':>7}"]
    for _, r in rows.iterrows():
        lines.append(f"{r['metric']:<7} {side(r, 'a'):<28} {side(r, 'b'):<28} {100 * r['value_a']:7.2f} "
                     f"{100 * r['value_b']:7.2f} {100 * r['difference']:+7.2f} "
                     f"[{100 * r['ci_low']:+6.2f}, {100 * r['ci_high']:+6.2f}] {p_text(r):>7}")
    return "\n".join(lines)


def _group(cell: tuple) -> tuple:
    from schemas.side_tables import SIDE_KEY

    return tuple(cell[SIDE_KEY.index(k)] for k in ("dataset", "protocol", "frames"))


@click.command()
@click.option("--results", required=True, type=click.Path(dir_okay=False),
              help="results.parquet from `analyze score --bootstrap N` (its per-frame data is read beside it).")
@click.option("--cell", "cells", multiple=True, metavar="SPEC",
              help="A cell: SCORER[,t=T][,model=M][,run=R][,dataset=D][,target=TT][,protocol=P][,frames=F]; "
                   "T defaults to 1. Give two or more, or --all.")
@click.option("--all", "every", is_flag=True, help="Every pair of cells with per-frame data on one dataset, "
                                                   "protocol and frame rule (of --dataset).")
@click.option("--dataset", default=None, help="Only cells of this dataset (with --all, or to disambiguate).")
@click.option("--bootstrap", "n_boot", type=click.IntRange(1, 100000), default=1000, show_default=True,
              help="Paired frame resamples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the resampling.")
@click.option("--level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Confidence level of the intervals.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the tidy rows to this parquet file.")
def compare(results, cells, every, dataset, n_boot, seed, level, out):
    """Paired frame-bootstrap differences A - B between cells, for AuPRC, AUROC and FPR95.

    Both cells of a pair are resampled with the same frames; the difference is that of the two
    rows' values, with a percentile interval and a two-sided bootstrap p-value. Every pair of
    the cells given is compared. Cells scored on other frames are refused.

    \b
    Example:
      analyze compare --results results.parquet --cell msp,model=eomt --cell rba,model=eomt
      analyze compare --results results.parquet --all --dataset road_anomaly --out pairs.parquet
    """
    import pandas as pd

    from analyze.compare.cells import all_pairs, compare_pairs, kept_cells
    from analyze.compare.framedata import read_frame_data
    from schemas.results import ResultsError, read_results
    from schemas.side_tables import SIDE_KEY

    if out is not None and str(out) == str(results):
        raise click.BadParameter("must not be the results file", param_hint="--out")
    try:
        specs = [(c, parse_cell(c)) for c in cells]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--cell") from None
    if every == bool(specs) or (specs and len(specs) < 2):
        raise click.UsageError("give two or more --cell, or --all")
    kept = kept_cells(read_results(results), read_frame_data(results))
    candidates = [c for c in kept if dataset is None or c[SIDE_KEY.index("dataset")] == dataset]
    chosen = ([resolve(s, candidates, text) for text, s in specs] if specs else sorted(candidates))
    if len(chosen) < 2:
        raise ResultsError(f"{results}: {len(chosen)} cell(s) with per-frame data; score with "
                           "`analyze score --bootstrap N` to keep it, then compare")
    # --all: every pair within each (dataset, protocol, frame rule); given cells: every pair of them
    groups = [chosen] if specs else [[c for c in chosen if _group(c) == g] for g in dict.fromkeys(map(_group, chosen))]
    rows = pd.concat([compare_pairs(all_pairs(g), kept, n_boot, seed, level) for g in groups if len(g) > 1],
                     ignore_index=True)
    click.echo(pair_table(rows))
    if out is not None:
        rows.to_parquet(out, index=False)
        click.echo(f"wrote {len(rows)} rows to {out}", err=True)
