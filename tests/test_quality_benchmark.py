"""A small, fast run of the quality benchmark (benchmarks/quality.py) on real images.

The same pipeline as the published benchmark, scaled down: scikit-learn's bundled digits (a
222-image pool), one prune rate, every method. It checks the protocol's mechanics — every
selection has exactly K distinct rows, stage 2 adds seeds only to random and the finalists, the
choice is made on validation numbers, the reports are written — not which method wins.
"""

import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(
        f"zcore_bench_{name}", os.path.join(ROOT, "benchmarks", f"{name}.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


quality = _load("quality")
pools = _load("pools")
PRUNE = 80


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cache = tmp_path_factory.mktemp("quality-cache")
    cfg = quality.Config.quick_config(
        pools=("digits",),
        prune_rates=(PRUNE,),
        cnn_pools=(),
        processes=1,
        cache_dir=str(cache),
    )
    selections = {}
    res = quality.run_benchmark(cfg, log=lambda msg: None, selections=selections)
    return cfg, res, selections


def test_every_method_selects_exactly_k_distinct_rows(tiny_run):
    cfg, res, selections = tiny_run
    n = res["pools"]["digits"]["pool_size"]
    keep = quality.n_keep(n, PRUNE)
    assert {m for _, m, _, _ in selections} == set(quality.METHODS)
    for (_, _m, prune, _s), idx in selections.items():
        assert prune == PRUNE
        quality.validate_selection(idx, n, keep)
    assert not np.array_equal(
        selections[("digits", "random", PRUNE, 0)], selections[("digits", "random", PRUNE, 1)]
    )


def test_stage_two_adds_seeds_to_random_and_finalists_only(tiny_run):
    cfg, res, _ = tiny_run
    cells = res["results"]["digits"]
    finalists = res["finalists"]
    assert len(finalists) == cfg.n_finalists
    assert all(m in quality.SCALABLE for m in finalists)
    for m, by_prune in cells.items():
        runs = by_prune[str(PRUNE)]["runs"]
        if m in quality.DETERMINISTIC:
            expect = 1
        elif m == "random" or m in finalists:
            expect = cfg.final_seeds
        else:
            expect = cfg.screen_seeds
        assert len(runs) == expect, m
        assert [r["seed"] for r in runs] == sorted(r["seed"] for r in runs)
        for r in runs:
            assert 0.0 <= r["val"] <= 1.0 and 0.0 <= r["test"] <= 1.0
    # the choice is the finalist with the best validation criterion
    rank = res["final_ranking"]
    assert res["chosen"] == max(finalists, key=lambda m: tuple(rank[m]))
    assert cells["random"][str(PRUNE)]["val"]["mean"] > 0.5  # digits: well above chance


def test_reports_are_written(tiny_run, tmp_path):
    _, res, _ = tiny_run
    paths = quality.write_outputs(res, str(tmp_path))
    with open(paths["json"]) as f:
        assert json.load(f)["chosen"] == res["chosen"]
    md = open(paths["md"]).read()
    assert "## How the default was chosen (validation splits only)" in md
    assert f"**{res['chosen']}** (chosen)" in md
    assert os.path.getsize(paths["png"]) > 1000


def test_verdict_needs_more_than_one_std_of_either_row():
    r = [{"val": v} for v in (0.80, 0.81, 0.79)]  # std 0.01
    win = [{"val": v} for v in (0.83, 0.83, 0.83)]
    wide = [{"val": v} for v in (0.80, 0.83, 0.86)]  # +0.03 within its own 0.03 band
    lose = [{"val": v} for v in (0.78, 0.78, 0.78)]
    assert quality.verdict(win, r, "val") == (pytest.approx(0.03), "win")
    assert quality.verdict(wide, r, "val")[1] == ""
    assert quality.verdict(lose, r, "val")[1] == "loss"
    table = {("a", "random", 70): r, ("a", "m", 70): win, ("b", "random", 70): r}
    table[("b", "m", 70)] = lose
    assert quality.rank_key(table, "m", "val") == (0, pytest.approx(0.005))


def test_cnn_trains_and_scores_on_raw_images():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, size=(40, 28, 28), dtype=np.uint8)
    y = np.arange(40) % 10
    cfg = quality.Config(cnn_min_steps=3, cnn_max_steps=3)
    acc = quality.train_cnn(imgs, y, imgs, y, seed=0, cfg=cfg)
    assert 0.0 <= acc <= 1.0


def test_pools_are_disjoint_and_long_tail_falls_ten_to_one():
    sizes = pools.longtail_sizes()
    assert sizes[0] == 2000 and sizes[-1] == 200 and sorted(sizes, reverse=True) == sizes
    y = np.repeat(np.arange(3), [50, 30, 20])
    a, b, c = pools._stratified_split(y, (50, 25, 25), seed=0)
    assert not (set(a) & set(b)) and not (set(a) & set(c)) and not (set(b) & set(c))
    assert len(a) + len(b) + len(c) == 100
    imgs = rng_images = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    copies, src = pools.near_copies(imgs, 8, seed=0)
    assert copies.shape == (8, 28, 28) and set(src) <= set(range(5))
    for k, i in enumerate(src):  # a copy stays close to its original, but is not identical
        diff = np.abs(copies[k].astype(int) - rng_images[i].astype(int)).mean()
        assert 0 < diff < 120


def test_missing_dataset_exits_with_the_install_command(monkeypatch, capsys):
    monkeypatch.setattr(quality.P, "fmnist_available", lambda *a, **k: False)
    assert quality.main(["--quick"]) == 2
    assert quality.INSTALL_CMD in capsys.readouterr().err
