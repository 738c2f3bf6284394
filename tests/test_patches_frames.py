"""Scoring and selecting object patches and video frames, through the operators, on real images.

Patches: real textile JPGs (``conformal_clip_data``) with three Detections each; every patch's
embedding is its crop, read from the JPG, downsampled to 8x8 grey levels (a real, if crude,
patch-level embedding), stored as a label attribute ``detections.detections[].emb``.

Frames: real .mp4 videos written with OpenCV from those JPGs (a slow pan over each image), decoded
back frame by frame; each decoded frame is written as a JPG (the frames' ``filepath``) and embedded
the same way, as a frame field ``frames.emb``.
"""

import importlib.util
import os

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from conftest import PLUGIN_NAME
from fiftyone.core.utils import deserialize_numpy_array
from PIL import Image

import zcore

COMPUTE = f"{PLUGIN_NAME}/compute_zcore"
SELECT = f"{PLUGIN_NAME}/select_coreset"
FAST = {"n_samples": 300, "redund_nn": 10, "seed": 0}
BOXES = ([0.05, 0.05, 0.4, 0.4], [0.5, 0.1, 0.45, 0.3], [0.2, 0.55, 0.5, 0.4])

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("conformal_clip_data") is None,
    reason="conformal-clip-data (the demo images) is not installed: see requirements-dev.txt",
)


def _images(n):
    import conformal_clip_data

    root = conformal_clip_data.textile_simulated_root()
    out = []
    for label in ("nominal", "local", "global"):
        folder = os.path.join(root, label)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(".jpg"))
        out += [(os.path.join(folder, f), label) for f in files[: n // 3 + 1]]
    return out[:n]


def _embed(img, box=None):
    img = img.convert("L")
    if box is not None:
        w, h = img.size
        x, y, bw, bh = box
        img = img.crop((int(x * w), int(y * h), int((x + bw) * w), int((y + bh) * h)))
    return np.asarray(img.resize((8, 8), Image.BILINEAR), dtype=np.float32).ravel() / 255.0


@pytest.fixture
def patches_dataset():
    ds = fo.Dataset()
    samples = []
    for path, label in _images(12):
        img = Image.open(path)
        dets = [fo.Detection(label=label, bounding_box=list(b), emb=_embed(img, b)) for b in BOXES]
        samples.append(fo.Sample(filepath=path, detections=fo.Detections(detections=dets)))
    ds.add_samples(samples)
    yield ds
    ds.delete()


@pytest.fixture
def video_dataset(tmp_path):
    import cv2

    ds = fo.Dataset()
    for k, (path, _) in enumerate(_images(3)):
        img = cv2.imread(path)
        video = str(tmp_path / f"pan_{k}.mp4")
        writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5, (128, 128))
        for t in range(10):  # a pan over the image, 10 frames
            o = 10 * t
            writer.write(np.ascontiguousarray(img[o : o + 128, o : o + 128]))
        writer.release()
        cap = cv2.VideoCapture(video)
        sample = fo.Sample(filepath=video)
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            n += 1
            frame_path = str(tmp_path / f"pan_{k}_{n:03d}.jpg")
            cv2.imwrite(frame_path, frame)
            emb = _embed(Image.fromarray(frame[:, :, ::-1]))
            sample.frames[n] = fo.Frame(filepath=frame_path, emb=emb)
        cap.release()
        assert n == 10, f"decoded {n} frames from {video}"
        ds.add_sample(sample)
    yield ds
    ds.delete()


def _op(uri, collection, **params):
    if isinstance(collection, fo.Dataset):
        ctx = {"dataset": collection, "params": params}
    else:
        ctx = {"view": collection, "params": {"view_target": "CURRENT_VIEW", **params}}
    r = foo.execute_operator(uri, ctx=ctx)
    assert r.error is None, r.error
    return r.result


def _floats(values):
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def test_patch_scores_land_on_the_detections(patches_dataset):
    ds = patches_dataset
    patches = ds.to_patches("detections")
    # an undeclared array attribute of labels is read back serialized
    X = np.stack([deserialize_numpy_array(v) for v in patches.values("detections.emb")])
    assert X.shape == (36, 64)
    out = _op(COMPUTE, patches, embeddings="detections.emb", component_fields=True, **FAST)
    assert out["num_scored"] == 36

    # on the dataset: one score per detection, equal to the core's scores in patch order
    ds.reload()
    assert isinstance(ds.get_field("detections.detections.zcore_score"), fo.FloatField)
    nested = ds.values("detections.detections.zcore_score")
    assert [len(x) for x in nested] == [3] * 12
    want = zcore.zcore_scores(X, **FAST)
    np.testing.assert_allclose(_floats(sum(nested, [])), want, atol=1e-12)
    assert "zcore_score" not in ds.get_field_schema()  # nothing at the sample level
    coverage = sum(ds.values("detections.detections.zcore_score_coverage"), [])
    assert all(isinstance(c, int) for c in coverage) and sum(coverage) == FAST["n_samples"]
    info = ds.get_run_info("zcore_score").config
    assert info.level == "patches" and info.score_path == "detections.zcore_score"
    assert info.component_fields is True

    # a fresh patches view sees the score; select the top 5 patches from Python and operator
    patches = ds.to_patches("detections")
    top = zcore.select_coreset(patches, size=5)
    assert top.count() == 5
    np.testing.assert_allclose(sorted(top.values("detections.zcore_score")), np.sort(want)[-5:])
    # the panel (and select_coreset's form) offer the patches' score; same count
    from zcore import panel as zp

    assert "detections.zcore_score" in zp.score_fields(patches)
    assert zp.coreset_summary(patches, "detections.zcore_score", "size", 5)["n_keep"] == 5
    res = _op(SELECT, patches, size_mode="size", size=5, view_name="top_patches", show=False)
    assert res["count"] == 5
    saved = ds.load_saved_view("top_patches")
    assert saved.count() == 5 and set(saved.values("id")) == set(top.values("id"))

    # from Python, the attribute's short name works too
    zcore.compute_zcore(ds.to_patches("detections"), embeddings="emb", score_field="zc2", **FAST)
    np.testing.assert_allclose(
        _floats(sum(ds.values("detections.detections.zc2"), [])), want, atol=1e-12
    )


def test_video_frame_scores_from_frame_field_and_frames_view(video_dataset):
    ds = video_dataset
    X = np.concatenate([np.stack(v) for v in ds.values("frames.emb")])
    assert X.shape == (30, 64)
    want = zcore.zcore_scores(X, **FAST)

    # 1. frame-level embeddings on the video dataset: one score per frame
    out = _op(COMPUTE, ds, embeddings="frames.emb", **FAST)
    assert out["num_scored"] == 30
    ds.reload()
    assert isinstance(ds.get_field("frames.zcore_score"), fo.FloatField)
    np.testing.assert_allclose(_floats(sum(ds.values("frames.zcore_score"), [])), want, atol=1e-12)
    top = zcore.select_coreset(ds, score_field="frames.zcore_score", size=6)
    assert top.count("frames") == 6
    kept = _floats(sum(top.values("frames.zcore_score"), []))
    np.testing.assert_allclose(np.sort(kept), np.sort(want)[-6:])

    # 2. a to_frames() view: the same frames, the score written to the source frames
    frames = ds.to_frames(sample_frames=False)
    assert frames.count() == 30
    out = _op(COMPUTE, frames, embeddings="emb", score_field="zc_frames", **FAST)
    assert out["num_scored"] == 30
    ds.reload()
    np.testing.assert_allclose(_floats(sum(ds.values("frames.zc_frames"), [])), want, atol=1e-12)
    frames = ds.to_frames(sample_frames=False)
    res = _op(SELECT, frames, size_mode="size", size=6, view_name="top_frames", show=False)
    assert res["count"] == 6
    saved = ds.load_saved_view("top_frames")
    assert set(saved.values("id")) == set(sum(top.values("frames.id"), []))


def test_grouped_dataset_scores_the_active_slice():
    ds = fo.Dataset()
    ds.add_group_field("group", default="left")
    samples = []
    images = _images(24)
    for left, right in zip(images[::2], images[1::2]):
        group = fo.Group()
        for (path, _), name in ((left, "left"), (right, "right")):
            emb = _embed(Image.open(path))
            samples.append(fo.Sample(filepath=path, group=group.element(name), emb=emb))
    ds.add_samples(samples)
    try:
        out = _op(COMPUTE, ds, embeddings="emb", **FAST)
        assert out["num_scored"] == 12
        assert all(v is not None for v in ds.values("zcore_score"))
        assert set(ds.select_group_slices("right").values("zcore_score")) == {None}
        ds.group_slice = "right"
        _op(COMPUTE, ds, embeddings="emb", score_field="zc_right", **FAST)
        assert all(v is not None for v in ds.values("zc_right"))
        assert set(ds.select_group_slices("left").values("zc_right")) == {None}
        assert zcore.select_coreset(ds, score_field="zc_right", size=4).count() == 4
    finally:
        ds.delete()


def test_component_fields_explain_the_score(patches_dataset):
    """``component_fields``: coverage and redundancy, written with the score; together with the
    initial draw they give the score back exactly."""
    from zcore.core import Execution, ScoreConfig, score_components
    from zcore.core.scoring import minmax_normalize

    ds = patches_dataset
    ds.set_values("pixels", [_embed(Image.open(p)) for p in ds.values("filepath")])
    _op(COMPUTE, ds, embeddings="pixels", component_fields=True, **FAST)
    X = np.stack(ds.values("pixels"))
    config = ScoreConfig(**{k: v for k, v in FAST.items() if k != "seed"})
    coverage, penalty, init, shift = score_components(
        X, config=config, execution=Execution(), seed=FAST["seed"]
    )
    got_cov = np.array(ds.values("zcore_score_coverage"))
    got_red = np.array(ds.values("zcore_score_redundancy"))
    np.testing.assert_array_equal(got_cov, coverage)
    np.testing.assert_array_equal(got_red, np.ldexp(penalty.astype(np.float64), -shift))
    assert got_cov.sum() == FAST["n_samples"] and np.all(got_red >= 0)
    np.testing.assert_allclose(
        np.array(ds.values("zcore_score")), minmax_normalize(got_cov - got_red + init), atol=1e-12
    )
    assert isinstance(ds.get_field("zcore_score_coverage"), fo.IntField)
    assert ds.get_run_info("zcore_score").config.component_fields is True

    # a component field that exists with another type: refused before anything is written
    ds.set_values("zc_redundancy", ["x"] * len(ds))
    before = ds.get_field_schema().keys()
    with pytest.raises(ValueError, match="zc_redundancy"):
        zcore.compute_zcore(ds, embeddings="pixels", score_field="zc", component_fields=True)
    assert ds.get_field_schema().keys() == before and "zc" not in ds.list_runs()
