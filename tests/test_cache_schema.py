"""The cache format: creation, validation, round trip of the description."""

import json

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.cache import (
    ARRAYS, SCHEMA_VERSION, CacheError, CacheSpec, create_cache, open_cache, read_pixel_logits,
    read_query_outputs, default_compressors, unlabelled_not_void, validate_attrs, write_chunk, write_frame_common,
)
from tests.factories import pixel_cache, provenance, query_cache


def test_pixel_cache_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    root, spec = pixel_cache(tmp_path / "c.zarr", [(20, 40), (16, 30)], rng)
    root2, spec2 = open_cache(tmp_path / "c.zarr")
    assert spec2 == spec
    logits = read_pixel_logits(root2, spec2, 1)
    assert logits.shape == (20, 8, 15) and logits.dtype == np.float16
    assert root2["labels"][1, 16:, :].min() == 255  # padding is void
    assert root2["done"][:].all()
    assert root2["logits"].compressors[-1].__class__.__name__ == "Crc32cCodec"


@pytest.mark.parametrize("dtype,fill", [("float16", 0), ("uint8", 255), ("float32", 0)])
def test_write_chunk_stores_what_setitem_stores(tmp_path, dtype, fill):
    """Same chunk files and bytes as ``arr[i] = value`` with empty chunks written, -0.0 included;
    a chunk equal to the fill value is stored too (every done frame has every chunk)."""
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(4, 3, 8, 16)) * 100).astype(dtype)
    data[1] = fill  # empty: stored all the same
    data[2] = -0.0 if dtype.startswith("float") else 7

    def setitem(a, i, v):
        a.with_config({"write_empty_chunks": True})[i] = v

    stores = []
    for name, put in (("ref", setitem), ("fast", write_chunk)):
        arr = zarr.open_group(tmp_path / f"{name}.zarr", mode="w").create_array(
            "x", shape=data.shape, chunks=(1, 3, 8, 16), dtype=dtype, fill_value=fill,
            compressors=default_compressors("lz4"))
        arr[1] = data[0]  # a stale chunk, which writing the empty value must replace
        for i in range(4):
            put(arr, i, data[i])
        np.testing.assert_array_equal(arr[:], data)
        files = sorted(p for p in (tmp_path / f"{name}.zarr" / "x").rglob("*") if p.is_file())
        stores.append({str(p.relative_to(tmp_path / f"{name}.zarr")): p.read_bytes() for p in files})
    assert stores[0] == stores[1] and "x/c/1/0/0/0" in stores[1]


def test_query_cache_geometry(tmp_path):
    rng = np.random.default_rng(0)
    # 45x80 with crop 32 -> resized 32x57 -> 2 overlapping crops; 40x20 portrait -> 64x32 -> 2 crops
    root, spec = query_cache(tmp_path / "q.zarr", [(45, 80), (40, 20), (32, 32)], rng, crop=32)
    assert spec.n_crops == 5
    np.testing.assert_array_equal(root["crop_frame"][:], [0, 0, 1, 1, 2])
    np.testing.assert_array_equal(root["crop_start"][:], [0, 25, 0, 32, 0])
    np.testing.assert_array_equal(root["resized_sizes"][:], [[32, 57], [64, 32], [32, 32]])
    cl, ml = read_query_outputs(root, spec, 1)
    assert cl.shape == (2, 6, 6) and cl.dtype == np.float32 and ml.shape == (2, 6, 8, 8) and ml.dtype == np.float16


def _corrupt(tmp_path, mutate):
    rng = np.random.default_rng(0)
    path = tmp_path / "c.zarr"
    pixel_cache(path, [(8, 8)], rng)
    root = zarr.open_group(str(path), mode="r+")
    mutate(root)
    return path


def test_rejects_unknown_version(tmp_path):
    path = _corrupt(tmp_path, lambda r: r.attrs.update({"schema_version": 99}))
    with pytest.raises(CacheError, match="schema_version 99 is not supported"):
        open_cache(path)


def test_rejects_missing_array(tmp_path):
    def drop(root):
        del root["labels"]
    path = _corrupt(tmp_path, drop)
    with pytest.raises(CacheError, match="array 'labels' is missing"):
        open_cache(path)


def test_rejects_wrong_dtype(tmp_path):
    def retype(root):
        del root["logits"]
        root.create_array("logits", shape=(1, 20, 4, 4), chunks=(1, 20, 4, 4), dtype="float32")
    path = _corrupt(tmp_path, retype)
    with pytest.raises(CacheError, match="'logits' has dtype float32, expected float16"):
        open_cache(path)


def test_rejects_not_a_cache_and_missing_path(tmp_path):
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    with pytest.raises(CacheError, match="not a cache"):
        open_cache(tmp_path / "g.zarr")
    with pytest.raises(CacheError, match="no cache found"):
        open_cache(tmp_path / "nothing.zarr")


def test_rejects_bad_provenance():
    spec = CacheSpec(kind="pixel", label_kind="anomaly", frame_ids=("a",), sizes=((4, 4),),
                     provenance=provenance(), n_classes=19, n_channels=20, void_channel=19, logit_sizes=((2, 2),))
    d = spec.to_dict()
    d["provenance"]["checkpoint_sha256"] = "not-a-hash"
    with pytest.raises(CacheError, match="checkpoint_sha256"):
        validate_attrs(d)


def test_create_refuses_existing(tmp_path):
    rng = np.random.default_rng(0)
    _, spec = pixel_cache(tmp_path / "c.zarr", [(8, 8)], rng)
    with pytest.raises(CacheError, match="already exists"):
        create_cache(tmp_path / "c.zarr", spec)


def test_array_table_is_documented():
    assert {a.name for a in ARRAYS} >= {"logits", "class_logits", "mask_logits", "labels", "done"}
    assert all(a.doc and len(a.dims) == len(a.chunk) for a in ARRAYS)


sizes = st.lists(st.tuples(st.integers(1, 3000), st.integers(1, 3000)), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(sizes=sizes, kind=st.sampled_from(["pixel", "query"]), void=st.one_of(st.none(), st.integers(0, 30)),
       labelled=st.one_of(st.none(), st.lists(st.booleans(), min_size=4, max_size=4)))
def test_spec_dict_round_trip(sizes, kind, void, labelled):
    extra = (dict(n_channels=20, void_channel=void, logit_sizes=tuple((max(1, h // 2), max(1, w // 2)) for h, w in sizes))
             if kind == "pixel" else dict(crop_size=64, n_queries=10, mask_size=16))
    spec = CacheSpec(kind=kind, label_kind="anomaly", frame_ids=tuple(f"id{i}" for i in range(len(sizes))),
                     sizes=tuple(sizes), provenance=provenance(), n_classes=19,
                     labelled=None if labelled is None else tuple(labelled[: len(sizes)]), **extra)
    d = json.loads(json.dumps(spec.to_dict()))  # what zarr attrs store
    assert CacheSpec.from_dict(d) == spec
    assert d["schema_version"] == SCHEMA_VERSION
    assert ("labelled" in d) == (labelled is not None)


def _track_spec(**over):
    base = dict(kind="pixel", label_kind="anomaly", frame_ids=("a", "b", "c"), sizes=((4, 4),) * 3,
                provenance=provenance(), n_classes=19, n_channels=20, void_channel=19, logit_sizes=((2, 2),) * 3)
    return CacheSpec(**{**base, **over})


def test_caches_without_labelled_read_as_all_labelled(tmp_path):
    """Caches written before `labelled` existed have no such attribute: every frame is labelled."""
    rng = np.random.default_rng(0)
    root, spec = pixel_cache(tmp_path / "old.zarr", [(8, 8), (6, 10)], rng)
    assert "labelled" not in zarr.open_group(str(tmp_path / "old.zarr"), mode="r").attrs.asdict()
    _, again = open_cache(tmp_path / "old.zarr")
    assert again.labelled is None and again.labelled_mask.tolist() == [True, True]
    new = _track_spec(labelled=(False, True, False))
    assert new.labelled_mask.tolist() == [False, True, False]
    validate_attrs(new.to_dict())
    with pytest.raises(CacheError, match="labelled and frame_ids differ in length"):
        _track_spec(labelled=(True,))
    d = new.to_dict()
    d["labelled"] = [1, 0, 1]
    with pytest.raises(CacheError, match="labelled"):
        validate_attrs(d)
    d["labelled"], d["extra"] = [True] * 3, {"benchmarks": {"smiyc": {"count": 3}}}  # the split name is required
    with pytest.raises(CacheError, match="extra/benchmarks/smiyc"):
        validate_attrs(d)


def test_unlabelled_frames_must_have_void_labels(tmp_path):
    spec = _track_spec(labelled=(False, True, True))
    root = create_cache(tmp_path / "t.zarr", spec)
    thumb = np.zeros((256, 256, 3), np.uint8)
    label = np.zeros((4, 4), np.uint8)
    with pytest.raises(CacheError, match="frame a: is unlabelled but its label is not void"):
        write_frame_common(root, spec, 0, label, thumb)
    write_frame_common(root, spec, 0, np.full((4, 4), 255, np.uint8), thumb)
    write_frame_common(root, spec, 1, label, thumb)
    assert unlabelled_not_void(root, spec) == []
    root["labels"][0, 1, 1] = 0  # what a faulty writer would leave
    assert unlabelled_not_void(root, spec) == ["a"]


@settings(max_examples=30, deadline=None)
@given(sizes=sizes, inference=st.sampled_from(["transformers", "detectron2"]))
def test_semantic_inference_round_trip(sizes, inference):
    """A query cache of a model other than EoMT (Mask2Former) records its inference and sizes;
    its geometry is one crop per frame, of the inference's size."""
    inputs = tuple((-(-h // 32) * 32, -(-w // 32) * 32) for h, w in sizes)
    masks = tuple((h // 4, w // 4) for h, w in inputs)
    spec = CacheSpec(kind="query", label_kind="anomaly", frame_ids=tuple(f"id{i}" for i in range(len(sizes))),
                     sizes=tuple(sizes), provenance=provenance(), n_classes=19, n_queries=10,
                     mask_size=max(max(m) for m in masks), semantic_inference=inference, input_sizes=inputs,
                     mask_sizes=masks)
    d = json.loads(json.dumps(spec.to_dict()))
    validate_attrs(d)
    assert CacheSpec.from_dict(d) == spec and "crop_size" in d and d["crop_size"] is None
    assert spec.n_crops == len(sizes) and spec.mask_shape == (max(m[0] for m in masks), max(m[1] for m in masks))
    for i, size in enumerate(sizes):
        geom = spec.windows(i)
        assert geom.original == size and geom.n_crops == 1 and spec.mask_hw(i) == masks[i]
        assert geom.tile == geom.resized == ((384, 384) if inference == "transformers" else inputs[i])


@pytest.mark.parametrize("over, message", [
    (dict(semantic_inference="eomt"), "semantic inference must be one of"),
    (dict(mask_sizes=None), "needs one of mask_sizes per frame"),
    (dict(input_sizes=((64, 64),)), "needs one of input_sizes per frame"),
    (dict(mask_size=8), "mask_size must be at least"),
    (dict(semantic_inference=None, crop_size=64), "belong to a cache with a semantic_inference"),
    (dict(kind="pixel", n_channels=20, logit_sizes=((8, 8),) * 2), "belongs to a query cache"),
])
def test_semantic_inference_is_checked(over, message):
    base = dict(kind="query", label_kind="anomaly", frame_ids=("a", "b"), sizes=((40, 70),) * 2,
                provenance=provenance(), n_classes=19, n_queries=10, mask_size=32, semantic_inference="transformers",
                input_sizes=((64, 128),) * 2, mask_sizes=((16, 32),) * 2)
    with pytest.raises(CacheError, match=message):
        CacheSpec(**{**base, **over})


def test_masks_of_several_sizes_are_stored_top_left(tmp_path):
    from schemas.cache import write_frame_query

    spec = CacheSpec(kind="query", label_kind="anomaly", frame_ids=("a", "b"), sizes=((40, 70), (70, 40)),
                     provenance=provenance(), n_classes=3, n_queries=2, mask_size=32, semantic_inference="detectron2",
                     input_sizes=((64, 128), (128, 64)), mask_sizes=((16, 32), (32, 16)))
    root = create_cache(tmp_path / "c.zarr", spec)
    assert root["mask_logits"].shape == (2, 2, 32, 32)
    rng = np.random.default_rng(0)
    written = [rng.normal(size=(1, 2, *spec.mask_hw(i))).astype(np.float16) for i in range(2)]
    for i, m in enumerate(written):
        write_frame_query(root, spec, i, rng.normal(size=(1, 2, 4)).astype(np.float32), m)
    for i, m in enumerate(written):
        np.testing.assert_array_equal(read_query_outputs(root, spec, i)[1], m)
    with pytest.raises(CacheError, match="mask_logits shape"):
        write_frame_query(root, spec, 0, np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 32, 32), np.float16))
