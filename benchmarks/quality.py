#!/usr/bin/env python
"""Does the coreset beat random? An honest, multi-pool quality benchmark on real labelled images.

Protocol (fixed before any number was seen; ``benchmarks/results/quality.md`` has the output):

* **Pools** (:mod:`pools`): eight pools from three real image sources that install offline —
  Fashion-MNIST at 2k / 10k / 50k images, long-tailed (10:1), with 30 % injected near-copies,
  with a second embedding (raw-pixel PCA); the textile JPGs; scikit-learn's digits. Each pool has
  a labelled **validation** split and a **test** split, disjoint from the pool and from each
  other.
* **Methods**: every row of :data:`METHODS` keeps ``K = round((1 - prune) N)`` pool samples
  without looking at labels, at prune rates 70, 80, 90 and 95 %. Rows: random; today's zcore
  methods (ZCore top-K, the documented ``cluster_balanced`` default, CCS-stratified ZCore,
  hierarchical k-means, k-means prototypes, cluster-balanced random); the peers of
  :mod:`zcore.core.peers` (k-center greedy, facility location, TypiClust, ProbCover, SemDeDup,
  prototypicality easy/hard); FiftyOne Brain uniqueness and representativeness (top-K).
* **Learners**: a linear probe (logistic regression, L2, C = 1, lbfgs, 200 iterations, on
  embeddings standardised with the kept samples' statistics) — the learner the choice is made
  for; and, on the Fashion-MNIST pools, a small CNN trained from scratch on the raw pixels
  (reported, not used for the choice).
* **Choosing the default, on validation only.** Stage 1 (screening): every method with
  ``screen_seeds`` (3) seeds on every pool, linear-probe accuracy on the *validation* splits.
  Candidates are the methods that scale to 1M x 512 within 2 minutes (:data:`SCALABLE`); the
  ``n_finalists`` (2) best by the criterion below go to stage 2, where they and random run with
  ``final_seeds`` (10) seeds. The default is the stage-2 finalist that is best by the criterion
  on validation. Only then are the test accuracies written into the tables; the test split is
  never used for a choice.
* **Criterion** (:func:`rank_key`): in each (pool, prune rate) cell, a method *beats* random when
  ``mean_method - mean_random > max(std_method, std_random)`` and *loses* when the reverse holds
  (sample stds over seeds). Methods are ranked by (wins - losses) summed over cells, then by the
  mean difference with random.
* **Seeds**: run ``s`` seeds the selection (and its ZCore scoring, with ``zcore_scores(seed=s)``
  at its defaults) and the CNN. The linear probe is deterministic given the selection.

Usage::

    python benchmarks/quality.py              # the full protocol (~1 h on 2 cores, warm cache)
    python benchmarks/quality.py --quick      # a tiny smoke run on small pools (a minute)

Writes ``quality.md``, ``quality.json`` and ``quality.png`` to ``benchmarks/results/`` (``--out``
elsewhere). Without Fashion-MNIST it prints the ``apt-get`` command and exits with status 2.
"""

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (ROOT, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

import pools as P  # noqa: E402

fmnist_available = P.fmnist_available
FMNIST_DIR = P.FMNIST_DIR
INSTALL_CMD = P.INSTALL_CMD

PRUNE_RATES = (70, 80, 90, 95)
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530  # Fashion-MNIST training-set statistics
KMEANS_BUDGET = "budget"  # n_clusters rule of cluster_balanced: one cluster per kept sample


# --- methods --------------------------------------------------------------------------------


def _core(name, **options):
    def run(ctx, keep, seed):
        from zcore.core import methods as M

        scores = ctx.zcore(seed) if M.needs_scores(name, options) else None
        kw = dict(options)
        if kw.get("n_clusters") == KMEANS_BUDGET:  # the seed's k-means, shared across rows
            kw.pop("n_clusters")
            kw["labels"] = ctx.kmeans(min(keep, M.MAX_BUDGET_CLUSTERS), seed)
        return M.select(name, keep, scores=scores, embeddings=ctx.pool.X, seed=seed, **kw)

    return run


def _peer(name, **options):
    def run(ctx, keep, seed):
        from zcore.core import peers

        kw = dict(options)
        if name == "facility_location":
            kw["graph"] = ctx.knn_graph()
        if name == "typiclust":
            kw["labels"] = ctx.kmeans(min(keep, peers.TYPICLUST_MAX_CLUSTERS), seed)
        return getattr(peers, name)(None, ctx.pool.X, keep, seed=seed, **kw)

    return run


def _random(ctx, keep, seed):
    return np.sort(np.random.default_rng(seed).choice(len(ctx.pool.X), size=keep, replace=False))


def _zcore_topk(ctx, keep, seed):
    from zcore.core import methods as M

    return np.sort(M.topk(ctx.zcore(seed), None, keep))


def _brain(field):
    def run(ctx, keep, seed):
        s = ctx.brain()[field]
        return np.sort(np.lexsort((np.arange(len(s)), -s))[:keep])

    return run


#: benchmark row -> how it selects ``(ctx, keep, seed) -> sorted indices``
METHODS = {
    "random": _random,
    "zcore-topk": _zcore_topk,
    "zcore-cluster-balanced": _core("cluster_balanced"),
    "zcore-stratified": _core("stratified"),
    "hierarchical-kmeans": _core("hierarchical_kmeans"),
    "kmeans-closest": _core(
        "cluster_balanced", keep="closest", quota="equal", n_clusters=KMEANS_BUDGET
    ),
    "cluster-random": _core(
        "cluster_balanced", keep="random", quota="equal", n_clusters=KMEANS_BUDGET
    ),
    "typiclust": _peer("typiclust"),
    "semdedup": _peer("semdedup"),
    "prototypicality-easy": _peer("prototypicality", keep="easy"),
    "prototypicality-hard": _peer("prototypicality", keep="hard"),
    "kcenter-greedy": _peer("kcenter_greedy"),
    "facility-location": _peer("facility_location"),
    "probcover": _peer("probcover"),
    "brain-uniqueness": _brain("uniqueness"),
    "brain-representativeness": _brain("representativeness"),
}
#: rows that may become the default: they select 100k of 1M x 512 in <= 2 min (bench_selection)
SCALABLE = (
    "zcore-topk",
    "zcore-cluster-balanced",
    "zcore-stratified",
    "hierarchical-kmeans",
    "kmeans-closest",
    "cluster-random",
    "typiclust",
    "semdedup",
    "prototypicality-easy",
    "prototypicality-hard",
)
#: rows whose selection does not depend on the seed (one selection, reused)
DETERMINISTIC = ("brain-uniqueness", "brain-representativeness")
#: O(N^2) rows, not run on pools larger than this
QUADRATIC = ("kcenter-greedy", "facility-location", "probcover")
QUADRATIC_MAX_N = 12_000
USES_ZCORE = ("zcore-topk", "zcore-cluster-balanced", "zcore-stratified")


@dataclasses.dataclass
class Config:
    """Every knob of the protocol; the defaults are the published protocol."""

    pools: tuple = P.POOLS
    prune_rates: tuple = PRUNE_RATES
    methods: tuple = tuple(METHODS)
    screen_seeds: int = 3
    final_seeds: int = 10
    n_finalists: int = 2
    cnn_pools: tuple = ("fmnist-10k", "fmnist-longtail", "fmnist-neardup")
    cnn_seeds: int = 5
    lp_C: float = 1.0
    lp_max_iter: int = 200
    cnn_batch: int = 64
    cnn_lr: float = 2e-3
    cnn_epochs: float = 10.0
    cnn_min_steps: int = 200
    cnn_max_steps: int = 500
    processes: int = 2
    cache_dir: str = P.DEFAULT_CACHE
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides):
        kw = dict(
            pools=("fmnist-10k", "fmnist-neardup", "digits"),
            prune_rates=(80,),
            screen_seeds=2,
            final_seeds=3,
            n_finalists=2,
            cnn_pools=("fmnist-10k",),
            cnn_seeds=2,
            cnn_min_steps=10,
            cnn_max_steps=10,
            quick=True,
        )
        kw.update(overrides)
        return cls(**kw)


def n_keep(n, prune):
    """How many of ``n`` samples a prune rate (in %) keeps: ``round((1 - prune/100) * n)``."""
    return max(1, int(math.floor((100 - prune) * n / 100 + 0.5)))


class PoolContext:
    """A pool and what its methods share: ZCore scores per seed, a kNN graph, Brain scores."""

    def __init__(self, pool, cfg):
        self.pool, self.cfg = pool, cfg
        self._graph = None
        self._brain = None
        self._tag = ("small_" if cfg.quick else "") + pool.name

    def zcore(self, seed):
        from zcore import zcore_scores

        path = os.path.join(
            self.cfg.cache_dir, f"zcore_{self._tag}_n{len(self.pool.X)}_s{seed}.npz"
        )
        if os.path.isfile(path):
            return np.load(path)["scores"]
        t0 = time.perf_counter()
        s = zcore_scores(self.pool.X, seed=seed)
        P._save_npz(path, scores=s, seconds=time.perf_counter() - t0)
        return s

    def kmeans(self, k, seed):
        """k-means labels of the pool for ``(k, seed)``, cached on disk: the rows that cluster
        with one cluster per kept sample share them across prune rates, as their own k-means
        would give the same clustering for the same ``k`` and seed."""
        from zcore.core import methods as M

        path = os.path.join(
            self.cfg.cache_dir, f"kmeans_{self._tag}_n{len(self.pool.X)}_k{k}_s{seed}.npz"
        )
        if os.path.isfile(path):
            return np.load(path)["labels"]
        labels, _ = M.kmeans(self.pool.X, k, seed=seed)
        P._save_npz(path, labels=labels)
        return labels

    def knn_graph(self):
        from zcore.core import methods as M
        from zcore.core import peers

        if self._graph is None:
            self._graph = peers.knn_graph(M.l2_normalize(self.pool.X), 20)
        return self._graph

    def brain(self):
        if self._brain is None:
            path = os.path.join(self.cfg.cache_dir, f"brain_{self._tag}_n{len(self.pool.X)}.npz")
            if os.path.isfile(path):
                d = np.load(path)
                self._brain = {k: d[k] for k in ("uniqueness", "representativeness")}
            else:
                self._brain = brain_scores(self.pool.X)
                P._save_npz(path, **self._brain)
        return self._brain


def brain_scores(X):
    """FiftyOne Brain uniqueness and representativeness of the pool, from the embeddings."""
    import fiftyone as fo
    import fiftyone.brain as fob

    ds = fo.Dataset()
    try:
        ds.add_samples([fo.Sample(filepath=f"/pool/{i:06d}.png") for i in range(len(X))])
        fob.compute_uniqueness(ds, embeddings=X, uniqueness_field="u", progress=False)
        fob.compute_representativeness(
            ds, embeddings=X, representativeness_field="r", progress=False
        )
        return {
            "uniqueness": np.asarray(ds.values("u"), dtype=np.float64),
            "representativeness": np.asarray(ds.values("r"), dtype=np.float64),
        }
    finally:
        ds.delete()


# --- learners -------------------------------------------------------------------------------


def linear_probe(Xtr, ytr, evals, cfg):
    """Accuracies of a logistic regression on standardised embeddings on each ``(X, y)``."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(ytr)) < 2:  # one class kept: the probe predicts it everywhere
        return [float(np.mean(y == ytr[0])) for _, y in evals]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scaler = StandardScaler().fit(Xtr)
        clf = LogisticRegression(C=cfg.lp_C, max_iter=cfg.lp_max_iter)
        clf.fit(scaler.transform(Xtr), ytr)
        return [float(np.mean(clf.predict(scaler.transform(X)) == y)) for X, y in evals]


def cnn_steps(n, cfg):
    steps = math.ceil(cfg.cnn_epochs * n / cfg.cnn_batch)
    return int(min(cfg.cnn_max_steps, max(cfg.cnn_min_steps, steps)))


def _to_tensor(images):
    import torch

    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0)
    return x.sub_(PIXEL_MEAN).div_(PIXEL_STD).unsqueeze(1)


def train_cnn(imgs_tr, ytr, imgs_te, yte, seed, cfg):
    """Test accuracy of a small CNN trained from scratch on the kept raw 28x28 images."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 10),
    )
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
            pred = net(_to_tensor(imgs_te[start : start + 2000])).argmax(1).numpy()
            correct += int(np.count_nonzero(pred == yte[start : start + 2000]))
    return correct / len(imgs_te)


# --- running --------------------------------------------------------------------------------


def validate_selection(idx, n, keep):
    """Raises unless ``idx`` holds exactly ``keep`` distinct indices in ``[0, n)``."""
    idx = np.asarray(idx)
    if idx.ndim != 1 or len(idx) != keep:
        raise AssertionError(f"selection has {idx.shape} entries, expected {keep}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise AssertionError(f"selection dtype {idx.dtype} is not integer")
    if len(np.unique(idx)) != keep or idx.min() < 0 or idx.max() >= n:
        raise AssertionError("selection has duplicates or out-of-range indices")


_CTX = {}  # pool name -> PoolContext, set before the workers fork


def _job(args):
    pool_name, method, prune, seed, with_cnn = args
    ctx = _CTX[pool_name]
    pool, cfg = ctx.pool, ctx.cfg
    keep = n_keep(len(pool.X), prune)
    t0 = time.perf_counter()
    idx = np.asarray(METHODS[method](ctx, keep, 0 if method in DETERMINISTIC else seed))
    t_sel = time.perf_counter() - t0
    validate_selection(idx, len(pool.X), keep)
    val, test = linear_probe(
        pool.X[idx], pool.y[idx], [(pool.X_val, pool.y_val), (pool.X_test, pool.y_test)], cfg
    )
    out = {
        "seed": seed,
        "val": val,
        "test": test,
        "select_s": round(t_sel, 3),
        "class_counts": np.bincount(pool.y[idx], minlength=pool.n_classes).tolist(),
    }
    if pool.source_ids is not None:  # kept rows that show an image already kept
        out["repeats_kept"] = int(keep - len(np.unique(pool.source_ids[idx])))
    if with_cnn:
        out["cnn_test"] = train_cnn(
            pool.images[idx], pool.y[idx], pool.test_images, pool.y_test, seed, cfg
        )
    return pool_name, method, prune, out, idx


def _init_worker():
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def _journal_path(cfg):
    """Where finished runs are appended (one JSON line each), so an interrupted benchmark
    resumes where it stopped; keyed by everything in the protocol that changes a run."""
    import hashlib

    key = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("processes", "cache_dir")}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return os.path.join(cfg.cache_dir, f"runs_{digest}.jsonl")


def _load_journal(path):
    done = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by an interruption
                    continue
                done[tuple(rec["job"])] = rec["run"]
    return done


def run_jobs(jobs, cfg, log, selections=None):
    """Runs ``(pool, method, prune, seed, with_cnn)`` jobs on ``cfg.processes`` forked workers.

    Runs already in the journal (:func:`_journal_path`) are not run again (and give no entry in
    ``selections``)."""
    path = _journal_path(cfg)
    done = _load_journal(path)
    todo = [j for j in jobs if tuple(j) not in done]
    if len(todo) < len(jobs):
        log(f"    {len(jobs) - len(todo)} runs from the journal {os.path.relpath(path, ROOT)}")
    results = [(j[0], j[1], j[2], done[tuple(j)], None) for j in jobs if tuple(j) in done]
    t0 = time.perf_counter()
    os.makedirs(cfg.cache_dir, exist_ok=True)
    with open(path, "a") as journal:

        def keep(job, r):
            results.append(r)
            journal.write(json.dumps({"job": list(job), "run": r[3]}) + "\n")
            journal.flush()

        if cfg.processes > 1 and len(todo) > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(cfg.processes, initializer=_init_worker) as pool:
                it = pool.imap_unordered(_job_keyed, todo, chunksize=1)
                for i, (job, r) in enumerate(it):
                    keep(job, r)
                    if (i + 1) % 50 == 0:
                        log(f"    {i + 1}/{len(todo)} runs ({time.perf_counter() - t0:.0f}s)")
        else:
            _init_worker()
            for job in todo:
                keep(job, _job(job))
    out = []
    for pool_name, method, prune, run, idx in results:
        if selections is not None and idx is not None:
            selections[(pool_name, method, prune, run["seed"])] = idx
        out.append((pool_name, method, prune, run))
    return out


def _job_keyed(job):
    return job, _job(job)


def summarise(runs, key):
    v = np.asarray([r[key] for r in runs], dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def verdict(m_runs, r_runs, key):
    """``(difference, "win" | "loss" | "")`` of a method against random on ``key``."""
    mm, sm = summarise(m_runs, key)
    mr, sr = summarise(r_runs, key)
    diff, band = mm - mr, max(sm, sr)
    return diff, "win" if diff > band else "loss" if -diff > band else ""


def rank_key(table, method, key="val", pools=None):
    """The criterion: ``(wins - losses, mean difference)`` over every (pool, prune) cell."""
    score, diffs = 0, []
    for (pool, m, prune), runs in table.items():
        if m != method or (pools is not None and pool not in pools):
            continue
        diff, v = verdict(runs, table[(pool, "random", prune)], key)
        score += {"win": 1, "loss": -1}.get(v, 0)
        diffs.append(diff)
    return score, float(np.mean(diffs)) if diffs else -np.inf


#: pools too costly to screen every method on (2 cores): they enter at stage 2, with random,
#: the finalists and today's defaults
STAGE2_ONLY_POOLS = ("fmnist-50k",)
TODAY = ("zcore-topk", "zcore-cluster-balanced")


def _screened(cfg):
    return [p for p in cfg.pools if p not in STAGE2_ONLY_POOLS]


def _applicable(method, pool):
    return not (method in QUADRATIC and len(pool.X) > QUADRATIC_MAX_N)


def run_benchmark(cfg, log=print, selections=None):
    """The whole protocol; returns a JSON-able dict with every number."""
    t_start = time.perf_counter()
    builder = P.PoolBuilder(cfg.cache_dir, log=log, small=cfg.quick)
    _CTX.clear()
    for name in cfg.pools:
        pool = builder.build(name)
        ctx = PoolContext(pool, cfg)
        _CTX[name] = ctx
        log(f"pool {name}: {pool.describe()}")
    # shared, seed-independent and per-seed caches are computed before forking
    t0 = time.perf_counter()
    for name, ctx in _CTX.items():
        if any(m in USES_ZCORE for m in cfg.methods):
            for s in range(cfg.screen_seeds):  # the finalists' extra seeds: in the workers
                ctx.zcore(s)
        if "facility-location" in cfg.methods and _applicable("facility-location", ctx.pool):
            ctx.knn_graph()
        if name not in STAGE2_ONLY_POOLS:
            from zcore.core import methods as M

            ks = {min(n_keep(len(ctx.pool.X), p), M.MAX_BUDGET_CLUSTERS) for p in cfg.prune_rates}
            for k in sorted(ks):
                for s in range(cfg.screen_seeds):
                    ctx.kmeans(k, s)
        if any(m.startswith("brain-") for m in cfg.methods) and name not in STAGE2_ONLY_POOLS:
            ctx.brain()
    timings = {"prepare_s": time.perf_counter() - t0}

    # stage 1: screening, validation accuracy, screen_seeds seeds
    t1 = time.perf_counter()
    jobs = []
    for name in cfg.pools:
        pool = _CTX[name].pool
        if name in STAGE2_ONLY_POOLS:
            continue
        for m in cfg.methods:
            if not _applicable(m, pool):
                continue
            seeds = 1 if m in DETERMINISTIC else cfg.screen_seeds
            for prune in cfg.prune_rates:
                jobs += [(name, m, prune, s, False) for s in range(seeds)]
    log(f"stage 1: {len(jobs)} runs")
    table = {}
    for pool_name, m, prune, run in run_jobs(jobs, cfg, log, selections):
        table.setdefault((pool_name, m, prune), []).append(run)
    timings["stage1_s"] = time.perf_counter() - t1
    screen = {m: rank_key(table, m) for m in cfg.methods if m != "random"}
    candidates = [m for m in cfg.methods if m in SCALABLE]
    finalists = sorted(candidates, key=lambda m: screen[m], reverse=True)[: cfg.n_finalists]
    log(f"stage 1 ranking (val): {sorted(screen.items(), key=lambda kv: kv[1], reverse=True)}")
    log(f"finalists: {finalists}")

    # stage 2: finalists and random with final_seeds seeds
    t2 = time.perf_counter()
    jobs = []
    for name in cfg.pools:
        late = name in STAGE2_ONLY_POOLS
        rows = ["random"] + finalists + ([m for m in TODAY if m not in finalists] if late else [])
        for m in rows:
            first = 0 if late else cfg.screen_seeds
            last = cfg.final_seeds if (m == "random" or m in finalists) else cfg.screen_seeds
            for prune in cfg.prune_rates:
                jobs += [(name, m, prune, s, False) for s in range(first, last)]
    log(f"stage 2: {len(jobs)} runs")
    for pool_name, m, prune, run in run_jobs(jobs, cfg, log, selections):
        table.setdefault((pool_name, m, prune), []).append(run)
    timings["stage2_s"] = time.perf_counter() - t2
    final_rank = {m: rank_key(table, m, pools=_screened(cfg)) for m in finalists}
    chosen = max(finalists, key=lambda m: final_rank[m])
    log(f"stage 2 ranking (val): {final_rank}; chosen: {chosen}")

    # CNN (test only, reported): random and the chosen default on the CNN pools
    t3 = time.perf_counter()
    jobs = []
    for name in cfg.cnn_pools:
        if name not in _CTX or _CTX[name].pool.images is None:
            continue
        for m in ("random", chosen):
            for prune in cfg.prune_rates:
                jobs += [(name, m, prune, s, True) for s in range(cfg.cnn_seeds)]
    log(f"CNN: {len(jobs)} runs")
    cnn = {}
    for pool_name, m, prune, run in run_jobs(jobs, cfg, log):
        cnn.setdefault((pool_name, m, prune), []).append(run)
    timings["cnn_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t_start

    def cell(runs, key):
        mean, std = summarise(runs, key)
        return {"mean": mean, "std": std, "n": len(runs)}

    results = {}
    for (pool_name, m, prune), runs in sorted(table.items()):
        runs = sorted(runs, key=lambda r: r["seed"])
        results.setdefault(pool_name, {}).setdefault(m, {})[str(prune)] = {
            "keep": n_keep(len(_CTX[pool_name].pool.X), prune),
            "val": cell(runs, "val"),
            "test": cell(runs, "test"),
            "select_s": float(np.mean([r["select_s"] for r in runs])),
            "runs": runs,
        }
    cnn_results = {}
    for (pool_name, m, prune), runs in sorted(cnn.items()):
        cnn_results.setdefault(pool_name, {}).setdefault(m, {})[str(prune)] = {
            "test": cell(runs, "cnn_test"),
            "runs": [{"seed": r["seed"], "cnn_test": r["cnn_test"]} for r in runs],
        }
    return {
        "protocol": dataclasses.asdict(cfg) | {"cache_dir": os.path.relpath(cfg.cache_dir, ROOT)},
        "pools": {name: ctx.pool.describe() for name, ctx in _CTX.items()},
        "screening": {m: list(v) for m, v in screen.items()},
        "finalists": finalists,
        "final_ranking": {m: list(v) for m, v in final_rank.items()},
        "chosen": chosen,
        "results": results,
        "cnn": cnn_results,
        "timings_s": timings,
        "environment": _environment(),
    }


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

    for dist in ("fiftyone", "fiftyone-brain"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # pragma: no cover
            env[dist] = None
    return env


# --- reports --------------------------------------------------------------------------------


def _table_of(res):
    """``(pool, method, prune) -> runs`` back from the JSON results."""
    return {
        (p, m, int(prune)): e["runs"]
        for p, by_m in res["results"].items()
        for m, by_prune in by_m.items()
        for prune, e in by_prune.items()
    }


def to_markdown(res):
    cfg = res["protocol"]
    rates = cfg["prune_rates"]
    table = _table_of(res)
    chosen = res["chosen"]
    screened = [p for p in res["pools"] if p not in STAGE2_ONLY_POOLS]
    late = [p for p in res["pools"] if p in STAGE2_ONLY_POOLS]
    lines = [
        "# Coreset quality: does the selection beat random?",
        "",
        "Generated by `python benchmarks/quality.py" + (" --quick" if cfg["quick"] else "") + "`; "
        "protocol in the script's docstring and in the README. Accuracy in %, mean ± sample "
        "std over seeds. ✓ / ✗: beats / loses to random by more than one std of either row; "
        "no mark: within one std.",
        "",
        "## How the default was chosen (validation splits only)",
        "",
        f"Stage 1 ranked every method by (wins - losses against random, mean difference) over "
        f"{len(screened)} pools x {len(rates)} prune rates ({', '.join(screened)}), on the "
        f"validation splits with {cfg['screen_seeds']} seeds"
        + (f"; {', '.join(late)} entered at stage 2 (cost)" if late else "")
        + ". Candidates must be zcore methods that select 100k of 1M x 512 within 2 minutes.",
        "",
        "| method | candidate | wins - losses (val) | mean diff vs random (val, points) |",
        "|---|---|---|---|",
    ]
    for m, (score, diff) in sorted(res["screening"].items(), key=lambda kv: kv[1], reverse=True):
        cand = "yes" if m in SCALABLE else "no"
        lines.append(f"| {m} | {cand} | {score:+d} | {100 * diff:+.2f} |")
    lines += [
        "",
        f"Stage 2 ({cfg['final_seeds']} seeds): "
        + ", ".join(f"`{m}` {v[0]:+d} / {100 * v[1]:+.2f}" for m, v in res["final_ranking"].items())
        + f". **Chosen: `{chosen}`.**",
        "",
    ]
    # per pool, test accuracy
    lines += ["## Test accuracy, linear probe (read only after the choice)", ""]
    for pool_name, desc in res["pools"].items():
        lines += [
            f"### {pool_name}",
            "",
            f"{desc['source']}; {desc['embedding']}; pool {desc['pool_size']:,}, validation "
            f"{desc['val_size']:,}, test {desc['test_size']:,}; pool class counts "
            f"{desc['pool_class_counts']}"
            + (f"; {desc['near_copies']:,} near-copies" if desc["near_copies"] else "")
            + ".",
            "",
            "| method | " + " | ".join(f"prune {p}%" for p in rates) + " |",
            "|---" * (len(rates) + 1) + "|",
        ]
        keeps = [res["results"][pool_name]["random"][str(p)]["keep"] for p in rates]
        lines.append("| *kept* | " + " | ".join(f"*{k:,}*" for k in keeps) + " |")
        methods = [m for m in cfg["methods"] if m in res["results"][pool_name]]
        for m in methods:
            cells = []
            for p in rates:
                runs = table[(pool_name, m, p)]
                mean, std = summarise(runs, "test")
                txt = f"{100 * mean:.2f} ± {100 * std:.2f}"
                if m != "random":
                    _, v = verdict(runs, table[(pool_name, "random", p)], "test")
                    txt += {"win": " ✓", "loss": " ✗"}.get(v, "")
                cells.append(txt)
            name = f"**{m}** (chosen)" if m == chosen else m
            n = len(table[(pool_name, m, rates[0])])
            lines.append(f"| {name} ({n}) | " + " | ".join(cells) + " |")
        lines.append("")
    # the chosen default vs random on validation (what the choice saw) and on test
    lines += [
        "## The chosen default against random on validation (what the choice saw)",
        "",
        "| pool | " + " | ".join(f"prune {p}%" for p in rates) + " |",
        "|---" * (len(rates) + 1) + "|",
    ]
    for pool_name in res["pools"]:
        cells = []
        for p in rates:
            diff, v = verdict(table[(pool_name, chosen, p)], table[(pool_name, "random", p)], "val")
            cells.append(f"{100 * diff:+.2f}" + {"win": " ✓", "loss": " ✗"}.get(v, ""))
        lines.append(f"| {pool_name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## The chosen default against random on test (linear probe)",
        "",
        "| pool | " + " | ".join(f"prune {p}%" for p in rates) + " |",
        "|---" * (len(rates) + 1) + "|",
    ]
    for pool_name in res["pools"]:
        cells = []
        for p in rates:
            diff, v = verdict(
                table[(pool_name, chosen, p)], table[(pool_name, "random", p)], "test"
            )
            cells.append(f"{100 * diff:+.2f}" + {"win": " ✓", "loss": " ✗"}.get(v, ""))
        lines.append(f"| {pool_name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## The chosen default against the best other method of each cell (test, linear probe)",
        "",
        "The best other method by mean test accuracy in each (pool, prune) cell, and the "
        'difference default - best. ≈: within one std of either row ("at or above the best '
        'peer within one std"); ✗: the best is ahead by more than one std.',
        "",
        "| pool | " + " | ".join(f"prune {p}%" for p in rates) + " |",
        "|---" * (len(rates) + 1) + "|",
    ]
    for pool_name in res["pools"]:
        cells = []
        for p in rates:
            others = [
                m
                for (pn, m, pr) in table
                if pn == pool_name and pr == p and m not in ("random", chosen)
            ]
            if not others:
                cells.append("-")
                continue
            best = max(others, key=lambda m: summarise(table[(pool_name, m, p)], "test")[0])
            diff, v = verdict(table[(pool_name, chosen, p)], table[(pool_name, best, p)], "test")
            mark = " ✗" if v == "loss" else " ≈" if v == "" else ""
            cells.append(f"{100 * diff:+.2f}{mark} ({best})")
        lines.append(f"| {pool_name} | " + " | ".join(cells) + " |")
    lines.append("")
    if res["cnn"]:
        lines += [
            "## Small CNN trained from scratch (test; reported, not used for the choice)",
            "",
            "| pool | method | " + " | ".join(f"prune {p}%" for p in rates) + " |",
            "|---|---" + "|---" * len(rates) + "|",
        ]
        for pool_name, by_m in res["cnn"].items():
            for m, by_p in by_m.items():
                cells = []
                for p in rates:
                    e = by_p[str(p)]["test"]
                    txt = f"{100 * e['mean']:.2f} ± {100 * e['std']:.2f}"
                    if m != "random":
                        r = by_m["random"][str(p)]["test"]
                        diff, band = e["mean"] - r["mean"], max(e["std"], r["std"])
                        txt += " ✓" if diff > band else " ✗" if -diff > band else ""
                    cells.append(txt)
                lines.append(f"| {pool_name} | {m} | " + " | ".join(cells) + " |")
        lines.append("")
    t = res["timings_s"]
    lines += [
        "## Runtime",
        "",
        f"On {res['environment']['cpu_count']} CPU cores (shared with other jobs). Embeddings "
        "and ZCore scores are cached in `.cache/quality/`.",
        "",
        "| step | seconds |",
        "|---|---|",
    ]
    lines += [f"| {k.removesuffix('_s')} | {v:.0f} |" for k, v in t.items()]
    lines.append("")
    return "\n".join(lines)


def plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = list(res["protocol"]["prune_rates"])
    table = _table_of(res)
    names = list(res["pools"])
    cols = 4
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    show = ["random", res["chosen"], "zcore-topk", "zcore-cluster-balanced"]
    show = list(dict.fromkeys(m for m in show if m in res["protocol"]["methods"]))
    colors = {"random": "gray", res["chosen"]: "tab:green"}
    for ax, name in zip(axes.ravel(), names):
        for i, m in enumerate(show):
            if (name, m, rates[0]) not in table:
                continue
            stats = [summarise(table[(name, m, p)], "test") for p in rates]
            ax.errorbar(
                np.asarray(rates) + (i - 1.5) * 0.4,
                [100 * s[0] for s in stats],
                yerr=[100 * s[1] for s in stats],
                marker="o",
                ms=3,
                capsize=2,
                label=m + (" (default)" if m == res["chosen"] else ""),
                color=colors.get(m, plt.cm.tab10(i + 2)),
            )
        ax.set_title(name, fontsize=9)
        ax.set_xticks(rates)
        ax.set_xlabel("prune rate (%)", fontsize=8)
        ax.set_ylabel("test accuracy (%)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Linear probe test accuracy vs prune rate (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(res, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f"quality.{k}") for k in ("json", "md", "png")}
    with open(paths["json"], "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    with open(paths["md"], "w") as f:
        f.write(to_markdown(res))
    plot(res, paths["png"])
    return paths


# --- CLI ------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny smoke run")
    p.add_argument("--out", default=None, help="output dir (default benchmarks/results)")
    p.add_argument("--cache-dir", default=None, help="cache dir (default .cache/quality)")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--pools", nargs="*", default=None, help=f"subset of {list(P.POOLS)}")
    p.add_argument(
        "--install-data", action="store_true", help=f"run `{INSTALL_CMD}` if needed (root)"
    )
    p.add_argument(
        "--report", metavar="JSON", help="only rewrite quality.md/png from a results JSON"
    )
    args = p.parse_args(argv)
    if args.report:
        with open(args.report) as f:
            res = json.load(f)
        paths = write_outputs(res, args.out or os.path.dirname(os.path.abspath(args.report)))
        print("wrote " + ", ".join(paths.values()))
        return 0
    if not P.fmnist_available():
        if not (args.install_data and P.install_fmnist()):
            print(
                f"Fashion-MNIST is not installed ({P.FMNIST_DIR}). Install it with:\n"
                f"    sudo sh -c '{INSTALL_CMD}'\nor rerun with --install-data as root.",
                file=sys.stderr,
            )
            return 2
    kw = {"processes": args.processes}
    if args.cache_dir:
        kw["cache_dir"] = os.path.abspath(args.cache_dir)
    if args.pools:
        kw["pools"] = tuple(args.pools)
    cfg = Config.quick_config(**kw) if args.quick else Config(**kw)
    out = args.out or (
        os.path.join(cfg.cache_dir, "quick-results")
        if args.quick
        else os.path.join(HERE, "results")
    )
    # a MongoDB of its own (the Brain rows need a dataset): never a user's database
    from zcore import testing_db

    db = testing_db.use_private_mongod(
        os.path.join(tempfile.mkdtemp(prefix="zcore-quality-"), "db")
    )
    for key, value in {
        "FIFTYONE_DO_NOT_TRACK": "true",
        "FIFTYONE_DATABASE_VALIDATION": "false",
        "FIFTYONE_SHOW_PROGRESS_BARS": "false",
        "HF_HUB_OFFLINE": "1",
    }.items():
        os.environ.setdefault(key, value)
    import fiftyone  # noqa: F401

    db.verify()
    t0 = time.perf_counter()
    res = run_benchmark(cfg, log=lambda msg: print(msg, flush=True))
    paths = write_outputs(res, out)
    print(f"done in {time.perf_counter() - t0:.0f}s; wrote " + ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
