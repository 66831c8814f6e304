#!/usr/bin/env bash
# The wheel is the product: install the built wheel (dependencies from the lock of that Python)
# into a fresh virtual environment and run the whole small pipeline from an unrelated folder,
# so nothing can come from the checkout.
#   usage: .ci/wheel_pipeline.sh PYTHON DIST_DIR
set -euo pipefail
PY=$1
DIST=$(cd "$2" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v "$PY" >/dev/null || { echo "wheel pipeline: interpreter $PY not found" >&2; exit 1; }
VER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
LOCK="$ROOT/lock-py$VER.txt"
[ -f "$LOCK" ] || { echo "wheel pipeline: no lock file $LOCK for Python $VER" >&2; exit 1; }
WHEEL=$(ls "$DIST"/anomaly_seg_cache-*.whl)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wheel-pipeline.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "== wheel pipeline: $($PY --version) in $WORK"
"$PY" -m venv "$WORK/venv"
V="$WORK/venv/bin"
"$V/python" -m pip install -q --upgrade pip
"$V/python" -m pip install -q -r "$LOCK"
"$V/python" -m pip install -q --no-deps "$WHEEL"
cd "$WORK"  # an unrelated folder: the checkout is not on the path
export PATH="$V:$PATH" OMP_NUM_THREADS=2
"$V/python" - <<'PY'
import schemas, schemas.manifest as m
assert "site-packages" in schemas.__file__, schemas.__file__
assert "site-packages" in str(m.default_manifest()), m.default_manifest()
import importlib.resources as r
for pkg in ("analyze", "extract", "schemas"):  # PEP 561: type checkers read the installed annotations
    assert r.files(pkg).joinpath("py.typed").is_file(), f"{pkg} lacks py.typed"
PY
extract --version
analyze --version
RUN="--device cpu --no-progress"
extract demo world --out world --n-train 4 --n-val 3 --n-anomaly 3 --size 64x128
extract demo train --data world --out erfnet.pth --steps 2 --height 32 --batch-size 2
extract demo train-eomt --data world --out eomt.ckpt --steps 2 --batch-size 2
extract datasets synth --dataset smiyc_anomaly_track --out data --n 3 --size 64x128
for m in erfnet eomt; do
  ckpt=$([ $m = erfnet ] && echo erfnet.pth || echo eomt.ckpt)
  extra=$([ $m = erfnet ] && echo "--input-height 32" || echo "")
  extract run --model $m --dataset road_anomaly --data-root world/anomaly --checkpoint $ckpt \
      --cache caches/$m/road_anomaly.zarr $extra $RUN
  extract run --model $m --dataset cityscapes_val --data-root world/cityscapes --checkpoint $ckpt \
      --cache caches/$m/cityscapes_val.zarr $extra $RUN
  extract run --model $m --dataset smiyc_anomaly_track --data-root data --checkpoint $ckpt \
      --cache caches/$m/smiyc_anomaly_track.zarr $extra $RUN
  analyze fit --cache caches/$m/cityscapes_val.zarr --temps 0.5,1.1 --out stats/$m.json --no-progress
done
analyze score --cache caches/erfnet/road_anomaly.zarr --cache caches/eomt/road_anomaly.zarr \
    --cache caches/erfnet/cityscapes_val.zarr --cache caches/eomt/cityscapes_val.zarr \
    --id-stats stats/erfnet.json --id-stats stats/eomt.json --scorers all --temps 0.5,1.1 \
    --component-metrics --bootstrap 20 --out results.parquet --no-progress
analyze report --results results.parquet --out report
analyze maps --cache caches/erfnet/road_anomaly.zarr --cache caches/eomt/road_anomaly.zarr \
    --id-stats stats/erfnet.json --id-stats stats/eomt.json --scorer all --out maps
analyze export --format smiyc --cache caches/eomt/smiyc_anomaly_track.zarr --scorer msp --method demo \
    --out export --no-progress
"$V/python" - <<'PY'
import pathlib
import pandas as pd
df = pd.read_parquet("results.parquet")
runs, scorers = df.run.nunique(), df.scorer.nunique()
assert runs == 2 and scorers >= 10, (runs, scorers)
assert {"auprc", "fpr95", "miou"} <= set(df.metric), sorted(set(df.metric))
assert pathlib.Path("report/table1.md").stat().st_size > 0
assert pathlib.Path("maps/panel.png").stat().st_size > 0
from schemas.cache import open_cache
h5 = sorted(pathlib.Path("export").rglob("*.hdf5"))
assert len(h5) == open_cache("caches/eomt/smiyc_anomaly_track.zarr")[1].n_frames, h5
print(f"wheel pipeline OK: {len(df)} rows, {runs} runs, {scorers} scorers, {len(h5)} exported frames")
PY
