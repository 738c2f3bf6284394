"""A small, fast run of the coreset quality benchmark (benchmarks/quality.py) on real images.

Same pipeline as the published benchmark, scaled down: 200 Fashion-MNIST pool images, 200 test
images, one prune rate, a few CNN steps. It checks that every selection method returns exactly
the requested number of distinct in-range indices and that the accuracies are sane. It does
*not* check which method wins. Needs the Debian package ``dataset-fashion-mnist``
(``apt-get install -y dataset-fashion-mnist``); skipped otherwise.
"""

import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "zcore_quality_benchmark", os.path.join(ROOT, "benchmarks", "quality.py")
)
quality = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quality)

needs_fmnist = pytest.mark.skipif(
    not quality.fmnist_available(),
    reason=(
        f"Fashion-MNIST is not installed in {quality.FMNIST_DIR}; "
        f"install it with: {quality.INSTALL_CMD}"
    ),
)

PRUNE = 70


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    cache = tmp_path_factory.mktemp("quality-cache")
    cfg = quality.Config.quick_config(
        pool=200,
        test_size=200,
        prune_rates=(PRUNE,),
        cnn_min_steps=10,
        cnn_max_steps=10,
        cache_dir=str(cache),
    )
    selections = {}
    res = quality.run_benchmark(cfg, log=lambda msg: None, selections=selections)
    return cfg, res, selections


@needs_fmnist
def test_every_method_selects_exactly_k_distinct_indices(quick_run):
    cfg, res, selections = quick_run
    keep = quality.n_keep(cfg.pool, PRUNE)
    assert keep == 60
    seen = {m for m, _, _ in selections}
    assert seen == set(quality.METHODS)
    for (method, prune, seed), idx in selections.items():
        idx = np.asarray(idx)
        assert prune == PRUNE
        assert idx.shape == (keep,), (method, seed)
        assert np.issubdtype(idx.dtype, np.integer), (method, seed)
        assert len(np.unique(idx)) == keep, (method, seed)
        assert idx.min() >= 0 and idx.max() < cfg.pool, (method, seed)
    # random selections differ across seeds; the counts of runs match the protocol
    assert not np.array_equal(selections[("random", PRUNE, 0)], selections[("random", PRUNE, 1)])
    assert len(res["results"]["random"][str(PRUNE)]["runs"]) == cfg.random_seeds
    for m in quality.METHODS[1:]:
        runs = cfg.default_row_seeds if m in quality.DEFAULT_ROWS else cfg.method_seeds
        assert len(res["results"][m][str(PRUNE)]["runs"]) == runs


@needs_fmnist
def test_accuracies_are_sane(quick_run):
    _, res, _ = quick_run
    for method, by_prune in res["results"].items():
        entry = by_prune[str(PRUNE)]
        for run in entry["runs"]:
            for learner in quality.LEARNERS:
                assert 0.0 <= run[learner] <= 1.0, (method, learner, run)
            # linear probe on pretrained embeddings: well above chance (10 classes)
            assert run["linear_probe"] > 0.3, (method, run)
            assert sum(run["class_counts"]) == entry["keep"]
        for learner in quality.LEARNERS:
            assert entry[learner]["std"] >= 0.0
    assert res["full_pool"]["linear_probe"]["mean"] > 0.5
    for scope in ("sub_pool", "full_pool"):
        for row in res["stability"][scope].values():
            for overlap in row.values():
                assert 0.0 <= overlap <= 1.0


@needs_fmnist
def test_reports_are_written(quick_run, tmp_path):
    _, res, _ = quick_run
    paths = quality.write_outputs(res, str(tmp_path))
    with open(paths["json"]) as f:
        assert json.load(f)["data"]["pool_size"] == 200
    md = open(paths["md"]).read()
    for m in quality.METHODS:
        assert f"| {m} |" in md
    assert "## Beats random?" in md and "max(std_method, std_random)" in md
    assert set(res["versus_random"]) == set(quality.LEARNERS)
    assert os.path.getsize(paths["png"]) > 1000


def test_cluster_balanced_quota_redistributes():
    # cluster sizes 2, 3 and 50: quota 10 each is impossible for the small ones
    labels = np.array([0] * 2 + [1] * 3 + [2] * 50)
    idx = quality.select_cluster_balanced(labels, 30, seed=0)
    quality.validate_selection(idx, len(labels), 30)
    counts = np.bincount(labels[idx], minlength=3)
    assert counts.tolist() == [2, 3, 25]


def test_versus_random_needs_more_than_one_std_of_either_row():
    def entry(mean, std):
        return {"linear_probe": {"mean": mean, "std": std}}

    results = {
        "random": {"70": entry(0.80, 0.01), "90": entry(0.80, 0.01)},
        # +0.02 beats a 0.01 band; +0.02 does not beat a 0.03 band (the method's own std)
        "a": {"70": entry(0.82, 0.005), "90": entry(0.82, 0.03)},
        # -0.015 loses against random's 0.01; +0.005 is within one std
        "b": {"70": entry(0.785, 0.0), "90": entry(0.805, 0.0)},
    }
    vs = quality.versus_random(results, (70, 90), "linear_probe")
    assert set(vs) == {"a", "b"}
    assert vs["a"]["70"] == (pytest.approx(0.02), "win")
    assert vs["a"]["90"][1] == "" and vs["b"]["70"][1] == "loss" and vs["b"]["90"][1] == ""


def test_missing_dataset_exits_with_the_install_command(monkeypatch, capsys):
    monkeypatch.setattr(quality, "fmnist_available", lambda *a, **k: False)
    assert quality.main(["--quick"]) == 2
    assert quality.INSTALL_CMD in capsys.readouterr().err
