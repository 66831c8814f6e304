"""`extract bench` on the CPU: every stage is timed and the report has the pipeline ratio."""

from click.testing import CliRunner

from extract.cli import main as extract_main


def test_bench_cli_small_models():
    for args in (["--model", "erfnet", "--size", "32x64"], ["--model", "eomt", "--small", "--compression", "lz4"]):
        res = CliRunner().invoke(extract_main, ["bench", *args, "--batch-size", "2", "--batches", "2"])
        assert res.exit_code == 0, res.output
        for stage in ("forward", "copy", "compress", "write", "pipeline"):
            assert stage in res.output
        assert "pipeline / slowest stage" in res.output


def test_default_writer_threads_is_half_the_cpus_between_4_and_16(monkeypatch):
    from extract.writer import frames as writer

    for cpus, want in ((1, 4), (2, 4), (16, 8), (28, 14), (128, 16)):
        monkeypatch.setattr(writer, "usable_cpus", lambda n=cpus: n)
        assert writer.default_writer_threads() == want
