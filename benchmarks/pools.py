"""Evaluation pools of the quality benchmark: real labelled images that install offline.

Sources (each from a package registry; nothing is downloaded at run time):

- **Fashion-MNIST** (Debian package ``dataset-fashion-mnist``, MIT): 60,000 training and 10,000
  test images, 28x28 grayscale, 10 balanced classes.
- **Textile** (PyPI package ``conformal-clip-data``, MIT): 2,000 simulated textile JPGs in 3
  classes (``nominal`` 1,000, ``global`` 500, ``local`` 500 defects).
- **Digits** (shipped inside scikit-learn, ``sklearn.datasets.load_digits``; the UCI optical
  recognition of handwritten digits test set): 1,797 8x8 images, 10 classes.

Every pool has three disjoint parts: the **pool** (what a method selects from, without labels),
a **validation** split (labelled images used to *choose* methods, options and defaults) and a
**test** split (read only for the final table). The validation and test splits of a pool are
class-balanced where the source allows, so a method that keeps every class wins over one that
keeps mostly the common ones (the usual long-tail evaluation).

Pools (``POOLS``):

``fmnist-10k``     10,000 Fashion-MNIST training images, uniform draw (balanced classes).
``fmnist-2k``      2,000 of them (a small collection).
``fmnist-50k``     50,000 (every training image outside the validation reserve).
``fmnist-longtail`` class sizes falling geometrically from 2,000 to 200 (10:1; 7,454 images;
                   the class order is a fixed random permutation).
``fmnist-neardup`` 7,000 originals plus 3,000 near-copies (30 % of the pool): each copy is a
                   random original (drawn with replacement) shifted by up to 2 px, with
                   brightness/contrast jitter and pixel noise, then embedded like any image.
``fmnist-pixels``  the ``fmnist-10k`` pool with a second embedding: PCA (64 components, fitted on
                   the pool) of the raw pixels instead of EfficientNet-Lite0.
``textile``        1,200 textile images (validation 400, test 400; stratified).
``digits``         1,000 digits images (validation 397, test 400; stratified).

Embeddings: the plugin's EfficientNet-Lite0 (``zcore.models.load_model("efficientnet-lite0",
image_size=64)``) through ``model.embed_all`` — the code FiftyOne's ``compute_embeddings`` calls —
cached in ``.cache/quality/`` per source image set.
"""

import dataclasses
import gzip
import os
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
DEFAULT_CACHE = os.path.join(ROOT, ".cache", "quality")
IMAGE_SIZE = 64
FMNIST_VAL_RESERVE = 10_000  # training images set aside: validation splits come from here
FMNIST_VAL_PER_CLASS = 500  # validation split of every Fashion-MNIST pool: 5,000 balanced
POOLS = (
    "fmnist-10k",
    "fmnist-2k",
    "fmnist-50k",
    "fmnist-longtail",
    "fmnist-neardup",
    "fmnist-pixels",
    "textile",
    "digits",
)


class DatasetMissing(RuntimeError):
    """Fashion-MNIST (Debian package dataset-fashion-mnist) is not installed."""


@dataclasses.dataclass
class Pool:
    """One evaluation pool: embeddings of the pool, validation and test images, their labels.

    ``images`` / ``val_images`` / ``test_images`` are uint8 grayscale arrays (n, 28, 28) for the
    Fashion-MNIST pools (the from-scratch CNN trains on them), ``None`` otherwise.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    source: str
    embedding: str
    images: np.ndarray = None
    val_images: np.ndarray = None
    test_images: np.ndarray = None
    n_copies: int = 0  # near-copies injected into the pool (fmnist-neardup)
    source_ids: np.ndarray = None  # fmnist-neardup: which original image each row shows

    def describe(self):
        return {
            "pool": self.name,
            "source": self.source,
            "embedding": self.embedding,
            "pool_size": len(self.X),
            "val_size": len(self.X_val),
            "test_size": len(self.X_test),
            "dim": int(self.X.shape[1]),
            "n_classes": self.n_classes,
            "pool_class_counts": np.bincount(self.y, minlength=self.n_classes).tolist(),
            "near_copies": self.n_copies,
        }


# --- sources --------------------------------------------------------------------------------


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
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fmnist(data_dir=FMNIST_DIR):
    """``(train_images, train_labels, test_images, test_labels)``: uint8 (n, 28, 28) and (n,)."""
    if not fmnist_available(data_dir):
        raise DatasetMissing(
            f"Fashion-MNIST not found in {data_dir}; install it with: {INSTALL_CMD}"
        )
    return tuple(read_idx(os.path.join(data_dir, FMNIST_FILES[k])) for k in FMNIST_FILES)


def load_textile():
    """``(paths, labels, class names)`` of the 2,000 textile JPGs of ``conformal-clip-data``."""
    import conformal_clip_data

    root = conformal_clip_data.textile_simulated_root()
    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    names = sorted({os.path.basename(os.path.dirname(p)) for p in paths})
    labels = np.array([names.index(os.path.basename(os.path.dirname(p))) for p in paths])
    return paths, labels, names


def load_digits_images():
    """``(images uint8 (1797, 8, 8), labels)``: scikit-learn's bundled handwritten digits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * (255.0 / 16.0)).astype(np.uint8), d.target.astype(np.int64)


# --- embeddings -----------------------------------------------------------------------------

_MODELS = {}


def _model(image_size):
    from zcore.models import load_model

    if image_size not in _MODELS:
        _MODELS[image_size] = load_model("efficientnet-lite0", image_size=image_size)
    return _MODELS[image_size]


def embed_images(images, *, image_size=IMAGE_SIZE, batch_size=256, threads=2, log=None):
    """EfficientNet-Lite0 embeddings of images (uint8 arrays, or paths), through zcore.models."""
    import torch

    torch.set_num_threads(threads)
    model = _model(image_size)
    out = np.empty((len(images), model.embedding_dim), dtype=np.float32)
    t0 = time.perf_counter()
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        if isinstance(batch[0], str):
            from PIL import Image

            batch = [np.asarray(Image.open(p).convert("RGB")) for p in batch]
        out[start : start + len(batch)] = model.embed_all(list(batch))
        if log and (start // batch_size) % 20 == 19:
            done = start + len(batch)
            log(f"    {done}/{len(images)} images ({time.perf_counter() - t0:.0f}s)")
    return out


def _save_npz(path, **arrays):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npz")
    os.close(fd)
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def cached_embeddings(cache_dir, name, images, log=print, threads=2):
    """Embeddings of ``images`` cached as ``<cache_dir>/<name>.npz`` (checked by length)."""
    path = os.path.join(cache_dir, name + ".npz")
    if os.path.isfile(path):
        data = np.load(path)
        if data["embeddings"].shape[0] == len(images):
            return data["embeddings"]
    t0 = time.perf_counter()
    log(f"  embedding {len(images)} images -> {path}")
    X = embed_images(images, threads=threads, log=log)
    _save_npz(path, embeddings=X, seconds=time.perf_counter() - t0)
    log(f"  embedded {len(images)} images in {time.perf_counter() - t0:.0f}s")
    return X


# --- splits ---------------------------------------------------------------------------------


def _stratified_split(y, sizes, seed):
    """Disjoint index arrays of the given total ``sizes``, each stratified by ``y``."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    parts = [[] for _ in sizes]
    total = sum(sizes)
    for c in classes:
        members = rng.permutation(np.flatnonzero(y == c))
        start = 0
        for i, size in enumerate(sizes):
            take = int(round(size * len(members) / total)) if i < len(sizes) - 1 else None
            chunk = members[start : start + take] if take is not None else members[start:]
            parts[i].append(chunk)
            start += len(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def _balanced_draw(y, per_class, seed):
    rng = np.random.default_rng(seed)
    return np.sort(
        np.concatenate(
            [
                rng.choice(np.flatnonzero(y == c), size=per_class, replace=False)
                for c in np.unique(y)
            ]
        )
    )


def longtail_sizes(n_classes=10, head=2000, ratio=10.0):
    """Class sizes falling geometrically from ``head`` to ``head / ratio``."""
    return [int(round(head * ratio ** (-c / (n_classes - 1)))) for c in range(n_classes)]


def near_copies(images, n_copies, seed):
    """``(copies, source index)``: ``n_copies`` perturbed copies of random images (with
    replacement): a shift of up to 2 px in each direction (edge pixels repeated), contrast x
    U(0.85, 1.15), brightness + U(-15, 15), Gaussian pixel noise (std 6 of 255)."""
    rng = np.random.default_rng(seed)
    src = rng.integers(len(images), size=n_copies)
    out = np.empty((n_copies,) + images.shape[1:], dtype=np.uint8)
    h, w = images.shape[1:]
    for k, i in enumerate(src):
        dy, dx = rng.integers(-2, 3, size=2)
        img = np.pad(images[i].astype(np.float32), 2, mode="edge")
        img = img[2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]
        img = img * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15)
        img = img + rng.normal(0, 6, size=img.shape)
        out[k] = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return out, src


def pixel_pca(images_fit, *others, n_components=64):
    """Raw-pixel PCA embeddings (components fitted on ``images_fit`` only)."""
    from sklearn.decomposition import PCA

    flat = images_fit.reshape(len(images_fit), -1).astype(np.float32) / 255.0
    pca = PCA(n_components=n_components, random_state=0).fit(flat)
    out = [pca.transform(flat).astype(np.float32)]
    for o in others:
        out.append(pca.transform(o.reshape(len(o), -1).astype(np.float32) / 255.0))
    return [a.astype(np.float32) for a in out]


# --- pools ----------------------------------------------------------------------------------


class PoolBuilder:
    """Builds the pools of :data:`POOLS` from the sources, embedding (and caching) on demand."""

    def __init__(self, cache_dir=DEFAULT_CACHE, seed=0, log=print, threads=2, small=False):
        self.cache_dir = cache_dir
        self.seed = seed
        self.log = log
        self.threads = threads
        self.small = small  # tiny pools for the smoke test (a few hundred images)
        self._fm = None

    # Fashion-MNIST: embeddings of every training and test image, computed once
    def _fmnist(self):
        if self._fm is None:
            xtr, ytr, xte, yte = load_fmnist()
            if self.small:  # smoke test: a fixed subset of the sources
                rng = np.random.default_rng(self.seed)
                tr = np.sort(rng.choice(len(xtr), 3000, replace=False))
                te = np.sort(rng.choice(len(xte), 500, replace=False))
                xtr, ytr, xte, yte = xtr[tr], ytr[tr], xte[te], yte[te]
            tag = "small" if self.small else "full"
            Etr = cached_embeddings(
                self.cache_dir, f"fmnist_train_{tag}_img{IMAGE_SIZE}", xtr, self.log, self.threads
            )
            Ete = cached_embeddings(
                self.cache_dir, f"fmnist_test_{tag}_img{IMAGE_SIZE}", xte, self.log, self.threads
            )
            rng = np.random.default_rng(self.seed)
            reserve_n = 1000 if self.small else FMNIST_VAL_RESERVE
            reserve = np.sort(rng.choice(len(xtr), reserve_n, replace=False))
            rest = np.setdiff1d(np.arange(len(xtr)), reserve)
            per_class = 50 if self.small else FMNIST_VAL_PER_CLASS
            val = reserve[_balanced_draw(ytr[reserve], per_class, self.seed + 1)]
            self._fm = dict(
                xtr=xtr,
                ytr=ytr.astype(np.int64),
                xte=xte,
                yte=yte.astype(np.int64),
                Etr=Etr,
                Ete=Ete,
                val=val,
                rest=rest,
            )
        return self._fm

    def _fmnist_pool(
        self, name, idx, X=None, images=None, embedding=None, n_copies=0, y=None, source_ids=None
    ):
        fm = self._fmnist()
        return Pool(
            name=name,
            X=fm["Etr"][idx] if X is None else X,
            y=fm["ytr"][idx] if y is None else y,
            X_val=fm["Etr"][fm["val"]],
            y_val=fm["ytr"][fm["val"]],
            X_test=fm["Ete"],
            y_test=fm["yte"],
            n_classes=10,
            source="Fashion-MNIST (Debian dataset-fashion-mnist)",
            embedding=embedding or f"EfficientNet-Lite0 {IMAGE_SIZE} px (1280-d)",
            images=fm["xtr"][idx] if images is None else images,
            val_images=fm["xtr"][fm["val"]],
            test_images=fm["xte"],
            n_copies=n_copies,
            source_ids=source_ids,
        )

    def _labelled_pool(self, name, images, labels, small_n, sizes, source):
        """A pool, validation and test split (stratified, ``sizes``) of a small labelled source
        embedded whole (``small_n`` random images of it for the smoke test)."""
        if self.small:
            keep = np.sort(np.random.default_rng(self.seed).choice(len(images), small_n, False))
            images, labels = [images[i] for i in keep], labels[keep]
        E = cached_embeddings(
            self.cache_dir,
            f"{name}_{'small' if self.small else 'full'}_img{IMAGE_SIZE}",
            images,
            self.log,
            self.threads,
        )
        pool, val, test = _stratified_split(labels, sizes, self.seed)
        return Pool(
            name=name,
            X=E[pool],
            y=labels[pool],
            X_val=E[val],
            y_val=labels[val],
            X_test=E[test],
            y_test=labels[test],
            n_classes=len(np.unique(labels)),
            source=source,
            embedding=f"EfficientNet-Lite0 {IMAGE_SIZE} px (1280-d)",
        )

    def _scale(self, n):
        return max(60, n // 20) if self.small else n

    def build(self, name):
        rng = np.random.default_rng(self.seed + 7)
        if name.startswith("fmnist"):
            fm = self._fmnist()
            rest = fm["rest"]
        if name in ("fmnist-10k", "fmnist-2k", "fmnist-50k"):
            n = {"fmnist-10k": 10_000, "fmnist-2k": 2_000, "fmnist-50k": 50_000}[name]
            n = min(self._scale(n), len(rest))
            sub = np.random.default_rng(self.seed + n).choice(len(rest), n, replace=False)
            return self._fmnist_pool(name, np.sort(rest[sub]))
        if name == "fmnist-longtail":
            sizes = longtail_sizes(head=self._scale(2000))
            order = rng.permutation(10)  # which class is the head: a fixed random permutation
            idx = []
            for rank, c in enumerate(order):
                members = rest[fm["ytr"][rest] == c]
                idx.append(rng.choice(members, size=sizes[rank], replace=False))
            return self._fmnist_pool(name, np.sort(np.concatenate(idx)))
        if name == "fmnist-neardup":
            n_orig, n_copy = self._scale(7000), self._scale(3000)
            orig = np.sort(rng.choice(rest, size=n_orig, replace=False))
            copies, src = near_copies(fm["xtr"][orig], n_copy, self.seed + 11)
            tag = "small" if self.small else "full"
            Ec = cached_embeddings(
                self.cache_dir,
                f"fmnist_neardup_copies_{tag}_n{n_copy}_seed{self.seed}_img{IMAGE_SIZE}",
                copies,
                self.log,
                self.threads,
            )
            X = np.concatenate([fm["Etr"][orig], Ec])
            y = np.concatenate([fm["ytr"][orig], fm["ytr"][orig][src]])
            images = np.concatenate([fm["xtr"][orig], copies])
            # shuffle so that copies are not all at the end
            perm = np.random.default_rng(self.seed + 12).permutation(len(X))
            source = np.concatenate([np.arange(n_orig), src])
            return self._fmnist_pool(
                name,
                None,
                X=X[perm],
                images=images[perm],
                y=y[perm],
                n_copies=n_copy,
                source_ids=source[perm],
            )
        if name == "fmnist-pixels":
            base = self.build("fmnist-10k")
            P, Pval, Ptest = pixel_pca(base.images, base.val_images, base.test_images)
            return dataclasses.replace(
                base,
                name=name,
                X=P,
                X_val=Pval,
                X_test=Ptest,
                embedding="PCA of raw pixels (64 components, fitted on the pool)",
            )
        if name == "textile":
            paths, labels, names = load_textile()
            source = "textile JPGs (PyPI conformal-clip-data, MIT): " + ", ".join(names)
            return self._labelled_pool(name, paths, labels, 300, (1200, 400, 400), source)
        if name == "digits":
            images, labels = load_digits_images()
            source = "handwritten digits 8x8 (bundled with scikit-learn, load_digits)"
            return self._labelled_pool(name, images, labels, 400, (1000, 397, 400), source)
        raise ValueError(f"unknown pool {name!r}; choose from {list(POOLS)}")


def main(argv=None):
    """Compute and cache every pool's embeddings (``python benchmarks/pools.py``)."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--cache-dir", default=DEFAULT_CACHE)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--small", action="store_true")
    p.add_argument("pools", nargs="*", default=list(POOLS))
    args = p.parse_args(argv)
    b = PoolBuilder(args.cache_dir, threads=args.threads, small=args.small, log=print)
    for name in args.pools:
        t0 = time.perf_counter()
        pool = b.build(name)
        print(name, pool.describe(), f"{time.perf_counter() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
