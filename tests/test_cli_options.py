"""Repeating an option never silently keeps the last value: list options accumulate, any other
option given twice is a usage error (exit 2), in both CLIs. Temperatures outside the range
the tool is tested for are refused with the reason."""

from click.testing import CliRunner

from analyze.cli.main import main as analyze_main
from extract.cli import main as extract_main
from schemas.results import read_results
from tests.factories import signal_pixel_cache


def _an(*args):
    return CliRunner().invoke(analyze_main, [str(a) for a in args])


def _usage_error(res, *needles):
    assert res.exit_code == 2, res.output
    for n in needles:
        assert n in res.output, (n, res.output)


def test_list_options_accumulate(tmp_path):
    cache = tmp_path / "c.zarr"
    signal_pixel_cache(cache, 3)
    out = tmp_path / "r.parquet"
    res = _an("score", "--cache", cache, "--scorers", "msp", "--scorers", "energy", "--temps", "0.5",
              "--temps", "1.1,2", "--out", out, "--no-progress", "--scheduler", "sync")
    assert res.exit_code == 0, res.output
    df = read_results(out)
    assert set(df.scorer) == {"msp", "energy"} and sorted(set(df.temperature)) == [0.5, 1.0, 1.1, 2.0]
    res = _an("maps", "--cache", cache, "--scorer", "msp", "--scorer", "maxlogit", "--frames", "f000",
              "--frames", "f002", "--out", tmp_path / "maps")
    assert res.exit_code == 0, res.output
    assert {p.name for p in (tmp_path / "maps").glob("*.npy")} == {
        f"f00{i}_{s}_T1.npy" for i in (0, 2) for s in ("msp", "maxlogit")}
    _usage_error(_an("score", "--cache", cache, "--scorers", "all", "--scorers", "msp", "--out", out),
                 "'all' cannot be combined")


def test_single_valued_options_given_twice_are_refused(tmp_path):
    cache = tmp_path / "c.zarr"
    signal_pixel_cache(cache, 2)
    out = tmp_path / "r.parquet"
    _usage_error(_an("score", "--cache", cache, "--out", out, "--out", tmp_path / "s.parquet"),
                 "--out given 2 times")
    _usage_error(_an("score", "--cache", cache, "--protocol", "exact", "--protocol", "smiyc", "--out", out),
                 "--protocol given 2 times")
    _usage_error(_an("report", "--results", out, "--out", tmp_path / "a", "--protocol", "exact", "--protocol",
                     "smiyc"), "--protocol given 2 times")
    _usage_error(_an("temperature", "--results", out, "--metric", "auprc", "--metric", "fpr95", "--select-on", "x"),
                 "--metric given 2 times")
    _usage_error(_an("maps", "--cache", cache, "--temp", "0.5", "--temp", "2", "--out", tmp_path / "m"),
                 "--temp given 2 times")
    assert not out.exists()
    res = CliRunner().invoke(extract_main, ["datasets", "synth", "--dataset", "road_anomaly", "--out",
                                            str(tmp_path / "d"), "--n", "2", "--n", "3"])
    _usage_error(res, "--n given 2 times")
    res = CliRunner().invoke(extract_main, ["run", "--model", "erfnet", "--model", "eomt", "--dataset",
                                            "road_anomaly", "--data-root", str(tmp_path), "--checkpoint", "x.pth"])
    _usage_error(res, "--model given 2 times")
    # a flag given twice means the same and is accepted
    res = _an("score", "--cache", cache, "--scorers", "msp", "--out", out, "--no-progress", "--no-progress",
              "--scheduler", "sync")
    assert res.exit_code == 0, res.output


def test_select_on_accumulates(tmp_path):
    out = tmp_path / "r.parquet"
    for ds, seed in (("road_anomaly", 1), ("fs_static", 2), ("smiyc_ra21", 3)):
        signal_pixel_cache(tmp_path / f"{ds}.zarr", 3, seed=seed, dataset=ds)
        res = _an("score", "--cache", tmp_path / f"{ds}.zarr", "--scorers", "msp", "--temps", "0.5", "--out", out,
                  "--no-progress", "--scheduler", "sync")
        assert res.exit_code == 0, res.output
    res = _an("temperature", "--results", out, "--select-on", "road_anomaly", "--select-on", "fs_static")
    assert res.exit_code == 0, res.output
    sel = read_results(out).query("selected_on != ''")
    assert set(sel.selected_on) == {"road_anomaly,fs_static"} and set(sel.dataset) == {"smiyc_ra21"}


def test_temperatures_outside_the_tested_range_are_refused(tmp_path):
    cache = tmp_path / "c.zarr"
    signal_pixel_cache(cache, 2)
    for temps in ("0.05", "0.5,1500"):
        _usage_error(_an("score", "--cache", cache, "--temps", temps, "--out", tmp_path / "r.parquet"),
                     "outside [0.1, 1000]", "float64")
    _usage_error(_an("maps", "--cache", cache, "--temp", "2000", "--out", tmp_path / "m"), "outside [0.1, 1000]")
    assert not (tmp_path / "r.parquet").exists() and not (tmp_path / "m").exists()


def test_max_memory_takes_dask_sizes_and_names_the_option(tmp_path):
    for bad in ("lots", "-1GiB"):
        _usage_error(_an("score", "--cache", tmp_path / "none.zarr", "--max-memory", bad), "--max-memory",
                     "512MiB")
    # a valid size gets past the option check (and fails on the missing cache, exit 1)
    res = _an("score", "--cache", tmp_path / "none.zarr", "--max-memory", "1.5 GB", "--out", tmp_path / "r.parquet")
    assert res.exit_code == 1 and "no cache found" in res.output, res.output
