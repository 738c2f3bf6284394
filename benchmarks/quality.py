#!/usr/bin/env python
"""Does the coreset help? A reproducible quality benchmark on real labelled images.

Protocol (fixed; see ``benchmarks/results/quality.md`` for the numbers it produces):

* **Data**: Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (IDX gzip files under
  ``/usr/share/datasets/fashion-mnist``). A *pool* of ``N`` training images (default 10,000,
  drawn without replacement with ``--seed``) and the full 10,000-image test set.
* **Embeddings**: the plugin's own EfficientNet-Lite0 model (``zcore.models.load_model(
  "efficientnet-lite0", image_size=64)``), fed the raw 28x28 grayscale images through the model's
  own transforms (gray repeated to 3 channels, resized to 64 px, scaled to [-1, 1]) by
  ``model.embed_all``: the same code FiftyOne's ``compute_embeddings`` calls. Pool and test
  embeddings are computed once and cached in ``.cache/quality/`` (keyed by N, seed, image size).
* **Selection methods**, each keeping ``K = round((1 - prune) * N)`` pool images for prune rates
  30, 50, 70, 80, 90 and 95 %, without looking at labels:

  - ``random``: uniform without replacement, 10 seeds (5 before the selection methods were
    added: 10 estimate its spread better);
  - ``zcore-10`` / ``zcore-100``: :func:`zcore.zcore_scores` with 10 (the default) / 100 random
    points per sample, other parameters at their defaults, top-K scores;
  - ``brain-uniqueness`` / ``brain-representativeness``: ``fiftyone.brain.compute_uniqueness`` /
    ``compute_representativeness`` on a FiftyOne dataset of the pool, from the same embeddings;
    top-K scores;
  - ``cluster-balanced``: k-means (k=50) on the embeddings, an equal quota per cluster (quota
    left unused by small clusters is redistributed to the others), uniform sampling inside each
    cluster.
  - the selection methods of ``zcore.core.methods``, each called with its documented defaults
    (added after the first publication; same pool, caches, learners and seeds):
    ``zcore-cluster-balanced`` (``cluster_balanced`` on the ``zcore-10`` scores; its default
    ``n_clusters="auto"``: round(sqrt(K)) clusters when K >= 15 % of the pool, else one cluster
    per kept sample, min(K, 1000)),
    ``zcore-stratified`` (``stratified``, CCS, on the ``zcore-10`` scores),
    ``hierarchical-kmeans`` (``hierarchical_kmeans``, no scores), ``simcore-target``
    (``target``, SimCore, towards a target set of ``target_size`` = 1,000 other, unlabelled
    training images outside the pool) and ``kmeans-closest`` (``cluster_balanced`` without
    scores, ``keep="closest"``, ``quota="equal"``, k = min(K, 1000): the samples closest to
    the centroids of k-means clusters, TypiClust-like; the k-means labels of seed ``s`` are
    shared by the prune rates with the same k); run ``s`` uses selection seed ``s`` (and ZCore
    scoring seed ``s``).
* **Learners**, trained on the K selected images only, evaluated on the full test set:

  1. linear probe: logistic regression (L2, C=1, lbfgs, at most 200 iterations) on embeddings
     standardised with the statistics of the selected images;
  2. a small CNN trained from scratch on the raw 28x28 pixels (conv 3x3/2 16 ch, ReLU, conv
     3x3/2 32 ch, ReLU, linear; Adam lr 2e-3 with cosine decay, batch 64, ``clip(10 epochs, 200,
     500)`` optimisation steps, no augmentation).

  Both run on one thread (``torch.set_num_threads(1)``, one BLAS thread): on a 2-core machine
  shared with other work, two threads spin-wait and run up to 10x slower.

* **Seeds**: a run index ``s`` seeds both the selection (when the method is random) and the CNN
  initialisation / batch order. ``random`` uses s = 0..9 (10 selections, one training each);
  ``zcore-10``, ``zcore-100`` and ``cluster-balanced`` use s = 0, 1, 2 (3 selections, one
  training each; ``--zcore-100-seeds 1`` scores ``zcore-100`` once and reuses that selection, at
  a third of the cost); the FiftyOne Brain methods are deterministic and are trained with
  s = 0, 1, 2. The row of the documented default, ``zcore-cluster-balanced``, runs s = 0..9 like
  random (``default_row_seeds``; ZCore scoring seeds 0..9): the claim that it beats random rests
  on it, and 3 runs give a poor estimate of its spread. The linear probe is deterministic given
  the selection, so its spread for the deterministic selections is 0.
* **Stability**: for ZCore, the overlap ``|A n B| / K`` of the kept sets of scoring seeds 0 and 1
  at each prune rate, for 10, 30, 100 and 300 points per sample, on a sub-pool (the first 2,000
  pool images; scoring cost grows with N^2), plus 10 and 100 points per sample on the full pool
  (seeds 0 and 1 of the methods' runs).
* **Beats random?** A method *beats* random at a prune rate (for a learner) when its mean
  accuracy exceeds random's by more than one standard deviation of *either* row:
  ``mean_method - mean_random > max(std_method, std_random)`` (sample stds over the runs; the
  means are then each outside the other's one-std band). It *loses* when
  ``mean_random - mean_method > max(std_method, std_random)``. Reported per method, prune rate
  and learner (:func:`versus_random`).

Usage::

    python benchmarks/quality.py                 # the full protocol (N = 10,000)
    python benchmarks/quality.py --pool 5000     # another pool size
    python benchmarks/quality.py --quick         # a tiny smoke run (minutes -> seconds)

Writes ``quality.md``, ``quality.json`` and ``quality.png`` to ``benchmarks/results/`` (or
``--out``). If Fashion-MNIST is not installed, it prints the ``apt-get`` command and exits with
status 2; ``--install-data`` runs that command itself (needs root).
"""

import argparse
import dataclasses
import gzip
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
INSTALL_CMD = "apt-get update && apt-get install -y dataset-fashion-mnist"
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
PRUNE_RATES = (30, 50, 70, 80, 90, 95)
METHODS = (
    "random",
    "zcore-10",
    "zcore-100",
    "brain-uniqueness",
    "brain-representativeness",
    "cluster-balanced",
    "zcore-cluster-balanced",
    "zcore-stratified",
    "hierarchical-kmeans",
    "simcore-target",
    "kmeans-closest",
)
# benchmark rows that call zcore.core.methods (with the methods' defaults): row -> method name
CORE_METHODS = {
    "zcore-cluster-balanced": "cluster_balanced",
    "zcore-stratified": "stratified",
    "hierarchical-kmeans": "hierarchical_kmeans",
    "simcore-target": "target",
    "kmeans-closest": "cluster_balanced",
}
KMEANS_CLOSEST_MAX_K = 1000  # kmeans-closest: k = min(K, 1000) clusters
_USES_ZCORE_SCORES = ("zcore-cluster-balanced", "zcore-stratified")
# rows whose claim "beats random" the docs rest on: as many runs as random (default_row_seeds)
DEFAULT_ROWS = ("zcore-cluster-balanced",)
LEARNERS = ("linear_probe", "cnn")
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530  # Fashion-MNIST training-set statistics


@dataclasses.dataclass
class Config:
    """Every knob of the protocol; the defaults are the published protocol."""

    pool: int = 10_000
    seed: int = 0
    image_size: int = 64
    test_size: int | None = None  # None: the full 10k test set
    prune_rates: tuple = PRUNE_RATES
    methods: tuple = METHODS
    random_seeds: int = 10
    method_seeds: int = 3
    default_row_seeds: int = 10  # runs of the rows of documented defaults (DEFAULT_ROWS)
    zcore_points: tuple = (10, 100)  # points per sample of the two ZCore methods
    zcore_100_scoring_seeds: int = 3  # scoring seeds of the costly ZCore method (1M points each)
    n_clusters: int = 50
    target_size: int = 1000  # unlabelled training images outside the pool (simcore-target)
    lp_C: float = 1.0
    lp_max_iter: int = 200
    cnn_batch: int = 64
    cnn_lr: float = 2e-3
    cnn_epochs: float = 10.0
    cnn_min_steps: int = 200
    cnn_max_steps: int = 500
    threads: int = 1
    stability_points: tuple = (10, 30, 100, 300)
    stability_pool: int = 2000
    embed_batch: int = 256
    cache_dir: str = os.path.join(ROOT, ".cache", "quality")
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides):
        """A tiny version of the protocol (a few hundred images, one prune rate, few steps)."""
        kw = dict(
            pool=300,
            test_size=300,
            prune_rates=(70,),
            random_seeds=2,
            method_seeds=1,
            default_row_seeds=1,
            n_clusters=10,
            target_size=100,
            cnn_min_steps=15,
            cnn_max_steps=15,
            stability_points=(10, 30),
            stability_pool=300,
            quick=True,
        )
        kw.update(overrides)
        return cls(**kw)


class DatasetMissing(RuntimeError):
    """Fashion-MNIST (Debian package dataset-fashion-mnist) is not installed."""


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def fmnist_available(data_dir=FMNIST_DIR):
    return all(os.path.isfile(os.path.join(data_dir, f)) for f in FMNIST_FILES.values())


def install_fmnist():
    """Runs the apt-get install (needs root); returns whether the files are there afterwards."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        print(f"--install-data needs root; run as root: {INSTALL_CMD}", file=sys.stderr)
        return False
    subprocess.run(["apt-get", "update"], check=True)
    subprocess.run(["apt-get", "install", "-y", "dataset-fashion-mnist"], check=True)
    return fmnist_available()


def read_idx(path):
    """Reads a gzipped IDX file (the MNIST format) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise ValueError(f"{path}: unsupported IDX type 0x{magic:08x}")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(shape)


def load_fmnist(data_dir=FMNIST_DIR):
    """``(train_images, train_labels, test_images, test_labels)``: uint8 (n, 28, 28) and (n,)."""
    if not fmnist_available(data_dir):
        raise DatasetMissing(
            f"Fashion-MNIST not found in {data_dir}; install it with: {INSTALL_CMD}"
        )
    out = [read_idx(os.path.join(data_dir, FMNIST_FILES[k])) for k in FMNIST_FILES]
    return tuple(out)


def draw_pool(n_train, pool, seed):
    """Sorted indices of the pool in the training set (without replacement)."""
    if not 3 <= pool <= n_train:
        raise ValueError(f"pool must be between 3 and {n_train}, got {pool}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_train, size=pool, replace=False))


def draw_target(n_train, pool_idx, size, seed):
    """Sorted training indices outside the pool: the unlabelled target set of simcore-target."""
    rng = np.random.default_rng(seed + 2)
    rest = np.setdiff1d(np.arange(n_train), pool_idx)
    return np.sort(rng.choice(rest, size=min(size, len(rest)), replace=False))


def draw_test(n_test, test_size, seed):
    if test_size is None or test_size >= n_test:
        return np.arange(n_test)
    rng = np.random.default_rng(seed + 1)
    return np.sort(rng.choice(n_test, size=test_size, replace=False))


# ---------------------------------------------------------------------------------------------
# Embeddings (the plugin's EfficientNet-Lite0)
# ---------------------------------------------------------------------------------------------


_MODELS = {}


def embed_images(images, *, image_size, batch_size=256, threads=2):
    """EfficientNet-Lite0 embeddings of uint8 (n, 28, 28) images, through zcore.models."""
    import torch

    from zcore.models import load_model

    torch.set_num_threads(threads)
    if image_size not in _MODELS:
        _MODELS[image_size] = load_model("efficientnet-lite0", image_size=image_size)
    model = _MODELS[image_size]
    out = np.empty((len(images), model.embedding_dim), dtype=np.float32)
    for start in range(0, len(images), batch_size):
        batch = list(images[start : start + batch_size])
        out[start : start + len(batch)] = model.embed_all(batch)
    return out


def _cache_path(cfg, name):
    return os.path.join(cfg.cache_dir, name + ".npz")


def _stored_seconds(data):
    """How long a cached result took to compute (NaN if not recorded)."""
    return float(data["seconds"]) if "seconds" in data.files else float("nan")


def _save_npz(path, **arrays):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npz")
    os.close(fd)
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def cached_embeddings(cfg, name, images, log):
    """Embeddings of ``images``, cached under ``cfg.cache_dir`` as ``name``."""
    path = _cache_path(cfg, name)
    if os.path.isfile(path):
        data = np.load(path)
        if data["embeddings"].shape[0] == len(images):
            return data["embeddings"], _stored_seconds(data)
    t0 = time.perf_counter()
    X = embed_images(
        images, image_size=cfg.image_size, batch_size=cfg.embed_batch, threads=cfg.threads
    )
    dt = time.perf_counter() - t0
    log(f"  embedded {len(images)} images in {dt:.1f}s -> {path}")
    _save_npz(path, embeddings=X, seconds=dt)
    return X, dt


# ---------------------------------------------------------------------------------------------
# Selection methods
# ---------------------------------------------------------------------------------------------


def n_keep(n, prune):
    """How many of ``n`` samples a prune rate (in %) keeps: ``round((1 - prune/100) * n)``."""
    return max(1, int(math.floor((100 - prune) * n / 100 + 0.5)))


def select_random(n, keep, seed):
    return np.sort(np.random.default_rng(seed).choice(n, size=keep, replace=False))


def select_top(scores, keep):
    from zcore import select_top_indices

    return np.sort(select_top_indices(scores, size=keep))


def cluster_labels(X, n_clusters, seed):
    from sklearn.cluster import KMeans

    k = min(n_clusters, len(X))
    return KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(X)


def select_cluster_balanced(labels, keep, seed):
    """Equal quota per cluster; quota a small cluster cannot use goes to the others; uniform
    sampling inside each cluster."""
    rng = np.random.default_rng(seed)
    clusters = np.unique(labels)
    sizes = np.array([np.count_nonzero(labels == c) for c in clusters])
    quota = np.zeros(len(clusters), dtype=np.int64)
    left = keep
    while left > 0:
        open_ = np.flatnonzero(quota < sizes)
        share, extra = divmod(left, len(open_))
        give = np.full(len(open_), share, dtype=np.int64)
        give[rng.permutation(len(open_))[:extra]] += 1  # remainder to random clusters
        give = np.minimum(give, sizes[open_] - quota[open_])
        quota[open_] += give
        left -= int(give.sum())
    picked = [
        rng.choice(np.flatnonzero(labels == c), size=q, replace=False)
        for c, q in zip(clusters, quota, strict=True)
        if q
    ]
    return np.sort(np.concatenate(picked))


def zcore_score_cached(cfg, X, *, points, seed, tag, log):
    """:func:`zcore.zcore_scores` with ``points`` points per sample, cached on disk."""
    from zcore import zcore_scores

    path = _cache_path(cfg, f"zcore_{tag}_n{len(X)}_pps{points}_seed{seed}")
    if os.path.isfile(path):
        data = np.load(path)
        return data["scores"], _stored_seconds(data)
    t0 = time.perf_counter()
    scores = zcore_scores(X, n_samples=points * len(X), seed=seed)
    dt = time.perf_counter() - t0
    log(f"  zcore {tag} N={len(X)} points/sample={points} seed={seed}: {dt:.1f}s")
    _save_npz(path, scores=scores, seconds=dt)
    return scores, dt


def brain_scores(X):
    """FiftyOne Brain uniqueness and representativeness of the pool, from the embeddings."""
    import fiftyone as fo
    import fiftyone.brain as fob

    ds = fo.Dataset()
    try:
        ds.add_samples(
            [fo.Sample(filepath=f"/fashion-mnist/pool/{i:06d}.png") for i in range(len(X))]
        )
        fob.compute_uniqueness(ds, embeddings=X, uniqueness_field="uniqueness", progress=False)
        fob.compute_representativeness(
            ds, embeddings=X, representativeness_field="representativeness", progress=False
        )
        uniq = np.asarray(ds.values("uniqueness"), dtype=np.float64)
        rep = np.asarray(ds.values("representativeness"), dtype=np.float64)
    finally:
        ds.delete()
    return {"brain-uniqueness": uniq, "brain-representativeness": rep}


# ---------------------------------------------------------------------------------------------
# Learners
# ---------------------------------------------------------------------------------------------


def linear_probe(Xtr, ytr, Xte, yte, cfg):
    """Test accuracy of a logistic regression on standardised embeddings (deterministic)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    # One BLAS thread: on a shared 2-core machine more threads spin and run several times slower.
    with threadpool_limits(cfg.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scaler = StandardScaler().fit(Xtr)
        clf = LogisticRegression(C=cfg.lp_C, max_iter=cfg.lp_max_iter)
        clf.fit(scaler.transform(Xtr), ytr)
        return float(np.mean(clf.predict(scaler.transform(Xte)) == yte))


def cnn_steps(n, cfg):
    """Optimisation steps for ``n`` training images: 10 epochs, clipped to [200, 500]."""
    steps = math.ceil(cfg.cnn_epochs * n / cfg.cnn_batch)
    return int(min(cfg.cnn_max_steps, max(cfg.cnn_min_steps, steps)))


def _make_cnn():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 10),
    )


def _to_tensor(images):
    import torch

    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0)
    return x.sub_(PIXEL_MEAN).div_(PIXEL_STD).unsqueeze(1)


def train_cnn(imgs_tr, ytr, imgs_te, yte, seed, cfg):
    """Test accuracy of the small CNN trained from scratch on the selected raw images."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = _make_cnn()
    x, y = _to_tensor(imgs_tr), torch.from_numpy(ytr.astype(np.int64))
    steps = cnn_steps(len(x), cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.cnn_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    bs = min(cfg.cnn_batch, len(x))
    perm, pos = torch.randperm(len(x), generator=gen), 0
    net.train()
    for _ in range(steps):
        if pos + bs > len(x):
            perm, pos = torch.randperm(len(x), generator=gen), 0
        idx = perm[pos : pos + bs]
        pos += bs
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
        sched.step()
    net.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(imgs_te), 2000):
            xb = _to_tensor(imgs_te[start : start + 2000])
            pred = net(xb).argmax(1).numpy()
            correct += int(np.count_nonzero(pred == yte[start : start + 2000]))
    return correct / len(imgs_te)


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


def validate_selection(idx, n, keep):
    """Raises unless ``idx`` holds exactly ``keep`` distinct indices in ``[0, n)``."""
    idx = np.asarray(idx)
    if idx.ndim != 1 or len(idx) != keep:
        raise AssertionError(f"selection has {idx.shape} entries, expected {keep}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise AssertionError(f"selection dtype {idx.dtype} is not integer")
    if len(np.unique(idx)) != keep or idx.min() < 0 or idx.max() >= n:
        raise AssertionError("selection has duplicates or out-of-range indices")


def _mean_std(values):
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def run_benchmark(cfg, log=print, prepare_only=False, selections=None):
    """Runs the whole protocol; returns a JSON-able dict with every number.

    ``prepare_only`` stops after the cacheable steps (embeddings and ZCore scores). If
    ``selections`` is a dict, it receives every selection as ``(method, prune, seed) -> indices``.
    """
    t_start = time.perf_counter()
    timings = {}
    xtr_all, ytr_all, xte_all, yte_all = load_fmnist()
    pool_idx = draw_pool(len(xtr_all), cfg.pool, cfg.seed)
    test_idx = draw_test(len(xte_all), cfg.test_size, cfg.seed)
    imgs, y = xtr_all[pool_idx], ytr_all[pool_idx].astype(np.int64)
    imgs_te, yte = xte_all[test_idx], yte_all[test_idx].astype(np.int64)
    N = len(imgs)
    log(f"pool N={N} (seed {cfg.seed}), test {len(imgs_te)} images")

    # 1. embeddings (cached)
    key = f"fmnist_pool{N}_seed{cfg.seed}_img{cfg.image_size}"
    test_key = f"fmnist_test{len(imgs_te)}_seed{cfg.seed}_img{cfg.image_size}"
    X, t1 = cached_embeddings(cfg, key, imgs, log)
    Xte, t2 = cached_embeddings(cfg, test_key, imgs_te, log)
    timings["embedding_s"] = t1 + t2
    Xtarget = None
    if "simcore-target" in cfg.methods:
        target_idx = draw_target(len(xtr_all), pool_idx, cfg.target_size, cfg.seed)
        target_key = f"fmnist_target{len(target_idx)}_seed{cfg.seed}_img{cfg.image_size}"
        Xtarget, t3 = cached_embeddings(cfg, target_key, xtr_all[target_idx], log)
        timings["embedding_s"] += t3
    zcore_costs = {}  # what each ZCore scoring cost when it was computed (cached or not)

    # 2. scores of the score-based methods
    t0 = time.perf_counter()
    scores = {}  # (method, scoring seed) -> scores
    run_seeds = {m: list(range(cfg.method_seeds)) for m in cfg.methods}
    run_seeds["random"] = list(range(cfg.random_seeds))
    for m in DEFAULT_ROWS:
        if m in run_seeds:
            run_seeds[m] = list(range(cfg.default_row_seeds))
    scored_methods = [m for m in cfg.methods if _is_zcore_scoring(m)]
    if any(m in _USES_ZCORE_SCORES for m in cfg.methods) and "zcore-10" not in scored_methods:
        scored_methods.append("zcore-10")
    for method in scored_methods:
        pps = int(method.split("-")[1])
        n_scoring = cfg.method_seeds
        if method == "zcore-10":  # the rows built on zcore-10 scores may run more seeds
            users = [m for m in cfg.methods if m in _USES_ZCORE_SCORES or m == method]
            n_scoring = max(len(run_seeds[m]) for m in users)
        if pps >= 100:
            n_scoring = max(1, min(cfg.zcore_100_scoring_seeds, cfg.method_seeds))
        for s in range(n_scoring):
            scores[(method, s)], dt = zcore_score_cached(
                cfg, X, points=pps, seed=s, tag=key, log=log
            )
            zcore_costs[f"N{N}_pps{pps}_seed{s}"] = dt
    timings["zcore_scoring_s"] = float(np.nansum(list(zcore_costs.values())))
    if prepare_only:
        sub_n = min(cfg.stability_pool, N)
        for pps in cfg.stability_points:
            for s in (0, 1):
                zcore_score_cached(cfg, X[:sub_n], points=pps, seed=s, tag=key + "_sub", log=log)
        return None
    if any(m.startswith("brain-") for m in cfg.methods):
        tb = time.perf_counter()
        for m, v in brain_scores(X).items():
            scores[(m, 0)] = v
        timings["brain_s"] = time.perf_counter() - tb
    labels = {}
    if "cluster-balanced" in cfg.methods:
        tk = time.perf_counter()
        for s in run_seeds["cluster-balanced"]:
            labels[s] = cluster_labels(X, cfg.n_clusters, s)
        timings["kmeans_s"] = time.perf_counter() - tk
    log(f"scores ready in {time.perf_counter() - t0:.1f}s")

    closest_labels = {}  # (k, seed) -> k-means labels of kmeans-closest

    def select_core(method, keep, s):
        from zcore.core.methods import kmeans
        from zcore.core.methods import select as core_select

        tc = time.perf_counter()
        kw = {"target_embeddings": Xtarget} if method == "simcore-target" else {}
        if method == "kmeans-closest":
            k = min(keep, KMEANS_CLOSEST_MAX_K)
            if (k, s) not in closest_labels:
                closest_labels[(k, s)] = kmeans(X, k, seed=s)[0]
            kw = {"keep": "closest", "quota": "equal", "labels": closest_labels[(k, s)]}
        idx = core_select(
            CORE_METHODS[method],
            keep,
            scores=scores[("zcore-10", s)] if method in _USES_ZCORE_SCORES else None,
            embeddings=X,
            seed=s,
            **kw,
        )
        key_t = f"select_{method}_s"
        timings[key_t] = timings.get(key_t, 0.0) + time.perf_counter() - tc
        return np.sort(idx)

    def select(method, keep, s):
        if method == "random":
            return select_random(N, keep, s)
        if method == "cluster-balanced":
            return select_cluster_balanced(labels[s], keep, s)
        if method in CORE_METHODS:
            return select_core(method, keep, s)
        if (method, s) in scores:
            return select_top(scores[(method, s)], keep)
        return select_top(scores[(method, 0)], keep)  # deterministic / single scoring seed

    # 3. train and evaluate
    t0 = time.perf_counter()
    results = {}
    for prune in cfg.prune_rates:
        lp_cache = {}
        keep = n_keep(N, prune)
        for method in cfg.methods:
            runs = []
            for s in run_seeds[method]:
                idx = select(method, keep, s)
                validate_selection(idx, N, keep)
                if selections is not None:
                    selections[(method, prune, s)] = idx
                # the probe is deterministic: an identical selection gives the same accuracy
                sel_key = idx.tobytes()
                if sel_key not in lp_cache:
                    lp_cache[sel_key] = linear_probe(X[idx], y[idx], Xte, yte, cfg)
                lp = lp_cache[sel_key]
                cnn = train_cnn(imgs[idx], y[idx], imgs_te, yte, s, cfg)
                counts = np.bincount(y[idx], minlength=10)
                runs.append(
                    {
                        "seed": s,
                        "linear_probe": lp,
                        "cnn": cnn,
                        "class_counts": counts.tolist(),
                    }
                )
            entry = {"prune": prune, "keep": keep, "runs": runs}
            for learner in LEARNERS:
                m, sd = _mean_std([r[learner] for r in runs])
                entry[learner] = {"mean": m, "std": sd, "n": len(runs)}
            results.setdefault(method, {})[str(prune)] = entry
            log(
                f"prune {prune:>2}% keep {keep:>5} {method:<25} "
                f"LP {entry['linear_probe']['mean']:.4f}±{entry['linear_probe']['std']:.4f}  "
                f"CNN {entry['cnn']['mean']:.4f}±{entry['cnn']['std']:.4f}"
            )
    # full-pool reference: every pool image kept
    full = {
        "linear_probe": linear_probe(X, y, Xte, yte, cfg),
        "cnn": _mean_std(
            [train_cnn(imgs, y, imgs_te, yte, s, cfg) for s in range(cfg.method_seeds)]
        ),
    }
    full = {
        "keep": N,
        "linear_probe": {"mean": full["linear_probe"], "std": 0.0, "n": 1},
        "cnn": {"mean": full["cnn"][0], "std": full["cnn"][1], "n": cfg.method_seeds},
    }
    timings["training_s"] = time.perf_counter() - t0

    # 4. stability of ZCore across scoring seeds
    t0 = time.perf_counter()
    stability = {"sub_pool": {}, "full_pool": {}}
    sub_n = min(cfg.stability_pool, N)
    Xs = X[:sub_n]
    for pps in cfg.stability_points:
        a, da = zcore_score_cached(cfg, Xs, points=pps, seed=0, tag=key + "_sub", log=log)
        b, db = zcore_score_cached(cfg, Xs, points=pps, seed=1, tag=key + "_sub", log=log)
        zcore_costs[f"N{sub_n}_pps{pps}_seed0"] = da
        zcore_costs[f"N{sub_n}_pps{pps}_seed1"] = db
        stability["sub_pool"][str(pps)] = {
            str(p): _overlap(a, b, n_keep(sub_n, p)) for p in cfg.prune_rates
        }
    for method in cfg.methods:
        if _is_zcore_scoring(method) and (method, 1) in scores:
            a, b = scores[(method, 0)], scores[(method, 1)]
            stability["full_pool"][method.split("-")[1]] = {
                str(p): _overlap(a, b, n_keep(N, p)) for p in cfg.prune_rates
            }
    timings["stability_scoring_s"] = float(
        np.nansum([v for k, v in zcore_costs.items() if k.startswith(f"N{sub_n}_")])
        if sub_n != N
        else 0.0
    )
    timings["this_invocation_wall_s"] = time.perf_counter() - t_start

    return {
        "protocol": dataclasses.asdict(cfg) | {"cache_dir": os.path.relpath(cfg.cache_dir, ROOT)},
        "data": {
            "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist)",
            "pool_size": N,
            "test_size": len(imgs_te),
            "pool_class_counts": np.bincount(y, minlength=10).tolist(),
            "classes": list(CLASSES),
            "embedding_dim": int(X.shape[1]),
        },
        "seeds": {m: run_seeds[m] for m in cfg.methods},
        "results": results,
        "versus_random": {
            learner: versus_random(results, cfg.prune_rates, learner) for learner in LEARNERS
        },
        "full_pool": full,
        "stability": stability | {"sub_pool_size": sub_n, "full_pool_size": N},
        "timings_s": timings,
        "zcore_scoring_costs_s": {k: None if np.isnan(v) else v for k, v in zcore_costs.items()},
        "environment": _environment(),
    }


def versus_random(results, rates, learner):
    """``{method: {prune: (difference, verdict)}}`` against ``random`` for one learner.

    ``difference = mean_method - mean_random`` (accuracy, 0-1); ``verdict`` is ``"win"`` when
    ``difference > max(std_method, std_random)``, ``"loss"`` when ``-difference`` exceeds it,
    ``""`` otherwise (within one std).
    """
    out = {}
    for m, by_prune in results.items():
        if m == "random":
            continue
        out[m] = {}
        for p in rates:
            e, r = by_prune[str(p)][learner], results["random"][str(p)][learner]
            diff = e["mean"] - r["mean"]
            band = max(e["std"], r["std"])
            verdict = "win" if diff > band else "loss" if -diff > band else ""
            out[m][str(p)] = (diff, verdict)
    return out


def _is_zcore_scoring(method):
    """``zcore-<points per sample>``: a top-K ZCore row that needs its own scores."""
    return method.startswith("zcore-") and method.split("-")[1].isdigit()


def _overlap(a, b, keep):
    sa, sb = set(select_top(a, keep).tolist()), set(select_top(b, keep).tolist())
    return len(sa & sb) / keep


def _environment():
    import sklearn
    import torch

    env = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    from importlib import metadata

    for dist in ("fiftyone", "fiftyone-brain", "efficientnet-lite-pytorch"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # pragma: no cover
            env[dist] = None
    return env


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------

_LEARNER_TITLES = {
    "linear_probe": "Linear probe (logistic regression on EfficientNet-Lite0 embeddings)",
    "cnn": "Small CNN trained from scratch on raw 28x28 pixels",
}


def to_markdown(res):
    cfg = res["protocol"]
    rates = cfg["prune_rates"]
    lines = [
        "# Coreset quality benchmark: Fashion-MNIST",
        "",
        f"Pool of {res['data']['pool_size']:,} training images (seed {cfg['seed']}), "
        f"evaluated on {res['data']['test_size']:,} test images. Embeddings: EfficientNet-Lite0 "
        f"at {cfg['image_size']} px ({res['data']['embedding_dim']}-d). Test accuracy (%), mean "
        f"± sample std over runs (random: {len(res['seeds']['random'])} selection seeds; others: "
        f"{cfg['method_seeds']} runs, the documented default `zcore-cluster-balanced` "
        f"{cfg.get('default_row_seeds', cfg['method_seeds'])}; see *Seeds*). **Bold**: best "
        "mean in the column. "
        "Generated by `python benchmarks/quality.py"
        + (f" --pool {res['data']['pool_size']}" if res["data"]["pool_size"] != 10000 else "")
        + (" --quick" if cfg["quick"] else "")
        + "`.",
        "",
    ]
    if res.get("note"):  # e.g. which rows a partial rerun replaced
        lines += [f"*Note:* {res['note']}", ""]
    for learner in LEARNERS:
        lines += [f"## {_LEARNER_TITLES[learner]}", ""]
        header = "| method | " + " | ".join(f"prune {p}%" for p in rates) + " |"
        lines += [header, "|---" * (len(rates) + 1) + "|"]
        keeps = [res["results"][cfg["methods"][0]][str(p)]["keep"] for p in rates]
        lines.append("| *kept images* | " + " | ".join(f"*{k:,}*" for k in keeps) + " |")
        best = {
            p: max(res["results"][m][str(p)][learner]["mean"] for m in cfg["methods"])
            for p in rates
        }
        for m in cfg["methods"]:
            cells = []
            for p in rates:
                e = res["results"][m][str(p)][learner]
                txt = f"{100 * e['mean']:.2f} ± {100 * e['std']:.2f}"
                cells.append(f"**{txt}**" if e["mean"] == best[p] else txt)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        f = res["full_pool"][learner]
        lines += [
            "",
            f"Whole pool (prune 0%, {res['full_pool']['keep']:,} images): "
            f"{100 * f['mean']:.2f} ± {100 * f['std']:.2f}.",
            "",
        ]
    lines += [
        "## Beats random?",
        "",
        "Difference with random (points of accuracy). ✓: the method beats random, i.e. "
        "mean_method - mean_random > max(std_method, std_random) (each mean lies outside the "
        "other's one-std band); ✗: random beats the method by the same rule; no mark: within "
        "one std.",
        "",
    ]
    for learner in LEARNERS:
        vs = versus_random(res["results"], rates, learner)
        lines += [
            f"**{_LEARNER_TITLES[learner].split(' (')[0]}**",
            "",
            "| method | " + " | ".join(f"prune {p}%" for p in rates) + " |",
            "|---" * (len(rates) + 1) + "|",
        ]
        for m, row in vs.items():
            cells = []
            for p in rates:
                diff, verdict = row[str(p)]
                mark = {"win": " ✓", "loss": " ✗"}.get(verdict, "")
                cells.append(f"{100 * diff:+.2f}{mark}")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        heavy = [p for p in rates if p >= 70]
        winners = [m for m, row in vs.items() if all(row[str(p)][1] == "win" for p in heavy)]
        if heavy:
            lines += [
                "",
                f"Beats random at every prune rate >= 70 % ({', '.join(f'{p}%' for p in heavy)}): "
                + (", ".join(f"`{m}`" for m in winners) if winners else "no method")
                + ".",
            ]
        lines.append("")
    st = res["stability"]
    lines += [
        "## ZCore stability across scoring seeds",
        "",
        "Overlap |A ∩ B| / K of the kept sets of scoring seeds 0 and 1 (1 = identical sets; "
        "random selections would overlap by about 1 - prune).",
        "",
        "| points per sample | pool | " + " | ".join(f"prune {p}%" for p in rates) + " |",
        "|---|---" + "|---" * len(rates) + "|",
    ]
    for scope, size in (("sub_pool", st["sub_pool_size"]), ("full_pool", st["full_pool_size"])):
        for pps, row in st[scope].items():
            lines.append(
                f"| {pps} | {size:,} | " + " | ".join(f"{row[str(p)]:.3f}" for p in rates) + " |"
            )
    lines += [
        "",
        "## Class balance of the kept sets",
        "",
        "No method sees the labels. Share of the rarest class in the kept set, in % (mean over "
        "runs; 10 = perfectly balanced).",
        "",
        "| method | " + " | ".join(f"prune {p}%" for p in rates) + " |",
        "|---" * (len(rates) + 1) + "|",
    ]
    for m in cfg["methods"]:
        cells = []
        for p in rates:
            runs = res["results"][m][str(p)]["runs"]
            shares = [min(r["class_counts"]) / sum(r["class_counts"]) for r in runs]
            cells.append(f"{100 * np.mean(shares):.1f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "## Seeds", ""]
    notes = dict(_SEED_NOTES)
    if cfg["zcore_100_scoring_seeds"] < cfg["method_seeds"]:
        notes["zcore-100"] = (
            f" (CNN seeds; scored with seeds 0..{cfg['zcore_100_scoring_seeds'] - 1} only, "
            "the rest reuse seed 0's selection)"
        )
    for m, seeds in res["seeds"].items():
        lines.append(f"- `{m}`: runs {seeds}" + notes.get(m, ""))
    t = res["timings_s"]
    lines += [
        "",
        "## Runtime",
        "",
        f"On {res['environment']['cpu_count']} CPU cores shared with other jobs. Embeddings and "
        "ZCore scores are cached in `.cache/quality/`; their cost is the one recorded when they "
        "were computed.",
        "",
        "| step | seconds |",
        "|---|---|",
    ]
    lines += [f"| {k.removesuffix('_s')} | {v:.0f} |" for k, v in t.items()]
    lines.append("")
    return "\n".join(lines)


_SEED_NOTES = {
    "random": " (selection seed = CNN seed)",
    "zcore-10": " (scoring seed = CNN seed)",
    "zcore-100": " (scoring seed = CNN seed)",
    "brain-uniqueness": " (CNN seeds; the selection is deterministic)",
    "brain-representativeness": " (CNN seeds; the selection is deterministic)",
    "cluster-balanced": " (k-means, in-cluster sampling and CNN seed)",
    "zcore-cluster-balanced": " (ZCore scoring, selection and CNN seed)",
    "zcore-stratified": " (ZCore scoring, selection and CNN seed)",
    "hierarchical-kmeans": " (selection and CNN seed)",
    "simcore-target": " (selection and CNN seed; the target set is fixed)",
    "kmeans-closest": " (k-means and CNN seed)",
}


def plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = res["protocol"]
    rates = list(cfg["prune_rates"])
    fig, axes = plt.subplots(1, len(LEARNERS), figsize=(6 * len(LEARNERS), 4.5))
    for ax, learner in zip(np.atleast_1d(axes), LEARNERS, strict=True):
        for i, m in enumerate(cfg["methods"]):
            means = [100 * res["results"][m][str(p)][learner]["mean"] for p in rates]
            stds = [100 * res["results"][m][str(p)][learner]["std"] for p in rates]
            x = np.asarray(rates, dtype=float) + (i - len(cfg["methods"]) / 2) * 0.25
            ax.errorbar(
                x,
                means,
                yerr=stds,
                marker="o",
                ms=3,
                capsize=2,
                label=m,
                color=plt.cm.tab20(i % 20),
            )
        ax.axhline(
            100 * res["full_pool"][learner]["mean"], color="gray", ls=":", label="whole pool"
        )
        ax.set_title(_LEARNER_TITLES[learner], fontsize=9)
        ax.set_xlabel("prune rate (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_xticks(rates)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle(
        f"Fashion-MNIST, pool {res['data']['pool_size']:,}: accuracy vs prune rate (mean ± std)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(res, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "json": os.path.join(out_dir, "quality.json"),
        "md": os.path.join(out_dir, "quality.md"),
        "png": os.path.join(out_dir, "quality.png"),
    }
    with open(paths["json"], "w") as f:
        json.dump(res, f, indent=1, sort_keys=False)
        f.write("\n")
    with open(paths["md"], "w") as f:
        f.write(to_markdown(res))
    plot(res, paths["png"])
    return paths


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _setup_fiftyone_env(tmp):
    os.environ.setdefault("FIFTYONE_DATABASE_DIR", os.path.join(tmp, "db"))
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", type=int, default=None, help="pool size N (default 10000)")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (seconds)")
    p.add_argument("--seed", type=int, default=0, help="pool seed (default 0)")
    p.add_argument("--image-size", type=int, default=64, help="embedding input size (64)")
    p.add_argument("--out", default=None, help="output dir (default benchmarks/results)")
    p.add_argument("--cache-dir", default=None, help="cache dir (default .cache/quality)")
    p.add_argument(
        "--install-data",
        action="store_true",
        help=f"if Fashion-MNIST is missing, run `{INSTALL_CMD}` (needs root)",
    )
    p.add_argument(
        "--prepare",
        action="store_true",
        help="only compute and cache the embeddings and ZCore scores, then exit",
    )
    p.add_argument(
        "--zcore-100-seeds",
        type=int,
        default=None,
        help="scoring seeds of zcore-100 (default 3; each costs ~10x a default ZCore run)",
    )
    args = p.parse_args(argv)

    if not fmnist_available():
        if not (args.install_data and install_fmnist()):
            print(
                f"Fashion-MNIST is not installed ({FMNIST_DIR}). Install it with:\n"
                f"    sudo sh -c '{INSTALL_CMD}'\n"
                "or rerun with --install-data as root.",
                file=sys.stderr,
            )
            return 2

    kw = {"seed": args.seed, "image_size": args.image_size}
    if args.cache_dir:
        kw["cache_dir"] = os.path.abspath(args.cache_dir)
    if args.pool is not None:
        kw["pool"] = args.pool
    if args.zcore_100_seeds is not None:
        kw["zcore_100_scoring_seeds"] = args.zcore_100_seeds
    cfg = Config.quick_config(**kw) if args.quick else Config(**kw)
    # --quick does not overwrite the published results unless --out says so
    out = args.out or (
        os.path.join(cfg.cache_dir, "quick-results")
        if args.quick
        else os.path.join(ROOT, "benchmarks", "results")
    )

    # A throw-away FiftyOne database (only the Brain baselines use it), unless one is configured.
    _setup_fiftyone_env(tempfile.mkdtemp(prefix="zcore-quality-"))
    t0 = time.perf_counter()
    if args.prepare:
        run_benchmark(cfg, log=lambda msg: print(msg, flush=True), prepare_only=True)
        print(f"cache ready in {time.perf_counter() - t0:.0f}s: {cfg.cache_dir}")
        return 0
    res = run_benchmark(cfg, log=lambda msg: print(msg, flush=True))
    paths = write_outputs(res, out)
    print(f"done in {time.perf_counter() - t0:.0f}s; wrote " + ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
