"""Coreset evaluation: the linear-probe protocol on arrays, the FiftyOne glue and the operator."""

import numpy as np
import pytest

from zcore.core import evaluate as E

# small runs: two prune rates, two seeds, few ZCore sampling points
FAST = {"prune": (0.5, 0.9), "seeds": 2, "seed": 0}


def clustered(seed=0, big=60, small=12, d=16):
    """Four common and four rare well-separated classes: at 90-95 % pruning random often misses
    a rare class, while cluster_balanced (one prototype per cluster) keeps every class."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for c, n in enumerate([big] * 4 + [small] * 4):
        X.append(rng.normal(size=d) * 6 + rng.normal(size=(n, d)))
        y += [f"c{c}"] * n
    return np.concatenate(X).astype(np.float32), np.array(y)


@pytest.fixture(scope="module")
def rare():
    X, y = clustered()
    res = E.evaluate_coreset(
        X, y, methods=("cluster_balanced", "topk"), prune=(0.5, 0.95), seeds=3, seed=0
    )
    return X, y, res


# --- core ----------------------------------------------------------------------------------------


def test_table_structure(rare):
    X, y, res = rare
    methods = ["cluster_balanced", "topk", "random"]
    assert len(res.rows) == 3 * 2 * 3
    assert {(r["method"], r["prune"], r["seed"]) for r in res.rows} == {
        (m, p, s) for m in methods for p in (0.5, 0.95) for s in (0, 1, 2)
    }
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in res.rows)
    assert [(r["method"], r["prune"]) for r in res.summary] == [
        (m, p) for p in (0.5, 0.95) for m in methods
    ]
    n_pool = res.info["n_pool"]
    assert res.info["n_labelled"] == len(y) == n_pool + res.info["n_test"]
    for r in res.summary:
        assert r["n_keep"] == E.n_keep_of(n_pool, r["prune"])
        assert set(r) >= {"mean", "std", "random_mean", "random_std", "difference", "mark"}
    assert res.rule == E.RULE and "max(std, random_std)" in res.rule
    assert res.info["scores"].startswith("zcore_scores")
    assert res.cell("random", 0.95)["mark"] == E.BASELINE
    assert "| cluster_balanced | 95% |" in res.to_markdown()


def test_cluster_balanced_beats_random_on_rare_classes(rare):
    _, _, res = rare
    assert res.cell("cluster_balanced", 0.95)["mark"] == E.BEATS


def test_marks_follow_the_rule_by_hand(rare):
    _, _, res = rare
    for cell in res.summary:
        acc = [
            r["accuracy"]
            for r in res.rows
            if r["method"] == cell["method"] and r["prune"] == cell["prune"]
        ]
        rnd = [
            r["accuracy"]
            for r in res.rows
            if r["method"] == "random" and r["prune"] == cell["prune"]
        ]
        mean, std = sum(acc) / len(acc), np.std(acc, ddof=1)
        rmean, rstd = sum(rnd) / len(rnd), np.std(rnd, ddof=1)
        assert cell["mean"] == pytest.approx(mean) and cell["std"] == pytest.approx(std)
        assert cell["difference"] == pytest.approx(mean - rmean)
        if cell["method"] == "random":
            continue
        band = max(std, rstd)
        expected = (
            "beats random" if mean - rmean > band else "loses" if rmean - mean > band else "level"
        )
        assert cell["mark"] == expected


@pytest.mark.parametrize(
    "args, expected",
    [
        ((0.8, 0.1, 0.7, 0.1), "beats random"),
        ((0.5, 0.1, 0.7, 0.05), "loses"),
        ((0.75, 0.1, 0.7, 0.05), "level"),
    ],
)
def test_mark(args, expected):
    assert E.mark(*args) == expected


def test_same_seed_same_table():
    X, y = clustered(seed=3, big=30, small=8)
    a = E.evaluate_coreset(X, y, methods=("auto", "topk"), **FAST)
    b = E.evaluate_coreset(X, y, methods=("auto", "topk"), **FAST)
    assert a.to_dict() == b.to_dict()
    c = E.evaluate_coreset(X, y, methods=("auto", "topk"), **{**FAST, "seed": 1})
    assert c.info["seeds"] == [1, 2] and a.info["seeds"] == [0, 1]


def test_given_scores_are_used_and_said():
    X, y = clustered(seed=1, big=30, small=8)
    s = np.arange(len(X), dtype=float)
    res = E.evaluate_coreset(X, y, methods=("topk",), scores=s, **FAST)
    assert res.info["scores"].startswith("given")


def test_methods_that_do_not_use_scores_get_none():
    X, y = clustered(seed=1, big=30, small=8)
    res = E.evaluate_coreset(X, y, methods=("hierarchical_kmeans", "typiclust"), **FAST)
    assert res.info["scores"].startswith("none")


def test_progress_contract():
    X, y = clustered(seed=2, big=30, small=8)
    calls = []
    E.evaluate_coreset(
        X, y, methods=("topk",), progress=lambda d, t, lab: calls.append((d, t, lab)), **FAST
    )
    total = 2 * (1 + 2 * 2)  # per seed: one scoring, 2 prune rates x (topk + random)
    assert calls[0] == (0, total, "evaluating coresets") and calls[-1] == (
        total,
        total,
        calls[0][2],
    )
    assert [c[0] for c in calls] == list(range(total + 1))


def test_plot_has_a_line_per_method_random_dashed(rare):
    _, _, res = rare
    fig = res.plot()
    names = [t.name for t in fig.data]
    assert names == ["cluster_balanced", "topk", "random"]
    assert fig.data[-1].line.dash == "dash"
    assert list(fig.data[0].x) == [0.05, 0.5]  # kept fraction, increasing


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"methods": ("nope",)}, "unknown selection method 'nope'"),
        ({"methods": ("target",)}, "needs a target set"),
        ({"methods": ("random",)}, "at least one selection method"),
        ({"prune": (0.0,)}, r"in \(0, 1\)"),
        ({"prune": (1.0,)}, r"in \(0, 1\)"),
        ({"prune": (0.999,)}, "at least 2"),
        ({"seeds": 0}, "seeds must be >= 1"),
        ({"test_size": 1.5}, "test_size"),
    ],
)
def test_bad_requests(kwargs, match):
    X, y = clustered(big=20, small=10)
    with pytest.raises(ValueError, match=match):
        E.evaluate_coreset(X, y, **{**FAST, **kwargs})


def test_too_few_labels_or_classes():
    X, y = clustered(big=20, small=10)
    with pytest.raises(ValueError, match="at least 2 classes"):
        E.evaluate_coreset(X, np.array(["a"] * len(X)), **FAST)
    y2 = y.astype(object)
    y2[:3] = "rare"  # 3 samples: 1 in the test split
    with pytest.raises(ValueError, match=r"too few: rare \(3\)"):
        E.evaluate_coreset(X, y2, **FAST)
    with pytest.raises(ValueError, match="one entry per row"):
        E.evaluate_coreset(X, y[:-1], **FAST)
    with pytest.raises(ValueError, match="None"):
        E.evaluate_coreset(X, [None] + list(y[1:]), **FAST)


def test_split_is_stratified_and_seeded():
    y = np.repeat(np.arange(3), [10, 20, 30])
    test, pool = E.split(y, test_size=0.3, seed=0)
    assert np.bincount(y[test]).tolist() == [3, 6, 9]
    assert len(np.intersect1d(test, pool)) == 0 and len(test) + len(pool) == len(y)
    np.testing.assert_array_equal(test, E.split(y, test_size=0.3, seed=0)[0])
    assert E.min_per_class(0.3) == 5  # round(0.3 * 5) = 2 test, 3 pool


# --- FiftyOne glue -------------------------------------------------------------------------------


@pytest.fixture
def datasets():
    made = []
    yield made
    for ds in made:
        if not ds.deleted:
            ds.delete()


def _labelled_dataset(made, *, missing_labels=(), missing_emb=(), seed=0):
    """A dataset of the clustered data: ``ground_truth`` Classifications, ``emb`` vectors, a
    string copy ``species`` and an int copy ``klass`` of the labels, a float ``conf``."""
    import fiftyone as fo

    X, y = clustered(seed=seed, big=30, small=10)
    samples = []
    for i in range(len(X)):
        s = fo.Sample(filepath=f"/tmp/zcore-eval/{i:05d}.jpg", conf=0.5)
        if i not in missing_emb:
            s["emb"] = X[i]
        if i not in missing_labels:
            s["ground_truth"] = fo.Classification(label=str(y[i]))
            s["species"] = str(y[i])
            s["klass"] = int(y[i][1:])
        samples.append(s)
    ds = fo.Dataset()
    made.append(ds)
    ds.add_samples(samples)
    return ds, X, y


def _snapshot(ds):
    ds.reload()
    return sorted(ds.get_field_schema()), ds.list_runs(), ds.list_saved_views()


def test_glue_classification_labels_skips_missing_and_records_typed_run(datasets):
    import zcore
    from zcore import runs
    from zcore.evaluation import list_evaluations, load_evaluation

    ds, X, y = _labelled_dataset(datasets, missing_labels=(0, 1, 2), missing_emb=(5, 6))
    before = sorted(ds.get_field_schema())
    res = zcore.evaluate_coreset(
        ds, label_field="ground_truth", embeddings="emb", methods=("topk",), **FAST
    )
    assert res.info["n_labelled"] == len(X) - 5 and res.info["n_skipped"] == 5
    assert res.info["label_path"] == "ground_truth.label" and res.info["embeddings"] == ["emb"]
    # the same table as the core on the same rows
    keep = [i for i in range(len(X)) if i not in (0, 1, 2, 5, 6)]
    core = E.evaluate_coreset(X[keep], y[keep], methods=("topk",), **FAST)
    assert res.summary == core.summary
    # recorded as the typed run, results reload as the same evaluation; no field written
    assert sorted(ds.get_field_schema()) == before
    assert list_evaluations(ds) == ["zcore_evaluation"]
    info = ds.get_run_info("zcore_evaluation")
    assert isinstance(info.config, runs.EvaluationRunConfig)
    assert info.config.methods == ["topk"] and info.config.seed == 0
    assert runs.EvaluationRun.keys(ds) == ["zcore_evaluation"] and runs.ScoreRun.keys(ds) == []
    again = load_evaluation(ds)
    assert again.summary == res.summary and again.rule == E.RULE
    with pytest.raises(ValueError, match="already exists"):
        zcore.evaluate_coreset(ds, label_field="ground_truth", embeddings="emb", **FAST)
    zcore.evaluate_coreset(
        ds, label_field="ground_truth", embeddings="emb", methods=("auto",), overwrite=True, **FAST
    )
    assert load_evaluation(ds).info["methods"] == ["auto"]
    ds.delete_run("zcore_evaluation")
    assert list_evaluations(ds) == []


def test_glue_string_and_int_fields_and_recorded_embeddings(datasets):
    import zcore

    ds, X, y = _labelled_dataset(datasets)
    a = zcore.evaluate_coreset(
        ds, label_field="species", embeddings="emb", methods=("topk",), run_key="a", **FAST
    )
    b = zcore.evaluate_coreset(
        ds, label_field="klass", embeddings="emb", methods=("topk",), run_key="b", **FAST
    )
    assert [r["accuracy"] for r in a.rows] == [r["accuracy"] for r in b.rows]
    # embeddings default: the field the score run recorded; stored scores restricted to the pool
    zcore.compute_zcore(ds, embeddings="emb", seed=0, n_samples=500)
    c = zcore.evaluate_coreset(ds, label_field="species", methods=("topk",), run_key="c", **FAST)
    assert c.info["embeddings"] == ["emb"] and "zcore_scores" in c.info["scores"]
    d = zcore.evaluate_coreset(
        ds, label_field="species", score_field="zcore_score", methods=("topk",), run_key="d", **FAST
    )
    assert d.info["scores"].startswith("given") and d.info["score_field"] == "zcore_score"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"label_field": "nope"},
            r"label_field 'nope' not found.*label fields: \['ground_truth', 'klass', 'species'\]",
        ),
        (
            {"label_field": "conf"},
            "is a FloatField; pass a Classification field or a string or int",
        ),
        ({"label_field": "filepath"}, "pass a Classification field"),
        (
            {"label_field": "ground_truth", "embeddings": "nope"},
            "embeddings field 'nope' not found",
        ),
        ({"label_field": "ground_truth", "embeddings": None}, "pass embeddings=<vector field>"),
        ({"label_field": "ground_truth", "methods": ("nope",)}, "unknown selection method"),
        ({"label_field": "ground_truth", "prune": (1.2,)}, r"in \(0, 1\)"),
        ({"label_field": "ground_truth", "run_key": "not a key"}, "identifier"),
        ({"label_field": "ground_truth", "score_field": "nope"}, "score field 'nope' not found"),
    ],
)
def test_glue_bad_input_writes_nothing(datasets, kwargs, match):
    import zcore

    ds, _, _ = _labelled_dataset(datasets)
    before = _snapshot(ds)
    with pytest.raises(ValueError, match=match):
        zcore.evaluate_coreset(ds, **{"embeddings": "emb", **FAST, **kwargs})
    assert _snapshot(ds) == before


def test_glue_too_few_labels_writes_nothing(datasets):
    import zcore

    ds, X, y = _labelled_dataset(datasets)
    # only one class labelled
    view = ds.limit(30)  # the first class only
    before = _snapshot(ds)
    with pytest.raises(ValueError, match="at least 2 classes"):
        zcore.evaluate_coreset(view, label_field="ground_truth", embeddings="emb", **FAST)
    with pytest.raises(ValueError, match="no sample of the"):
        zcore.evaluate_coreset(ds.limit(0), label_field="ground_truth", embeddings="emb", **FAST)
    assert _snapshot(ds) == before


# --- the operator --------------------------------------------------------------------------------

EVALUATE = "@zcore/zcore/evaluate_coreset"
OP_PARAMS = {
    "label_field": "ground_truth",
    "embeddings": "emb",
    "methods": ["topk"],
    "prune": "0.5, 0.9",
    "seeds": 2,
    "seed": 0,
}


def test_operator_executes_and_returns_the_table(datasets):
    import fiftyone.operators as foo

    from zcore import runs

    ds, X, y = _labelled_dataset(datasets)
    r = foo.execute_operator(EVALUATE, ctx={"dataset": ds, "params": OP_PARAMS})
    assert r.error is None, r.error
    out = r.result
    assert [(row["method"], row["prune"]) for row in out["table"]] == [
        ("topk", "50%"),
        ("random", "50%"),
        ("topk", "90%"),
        ("random", "90%"),
    ]
    assert out["rule"] == E.RULE and out["run_key"] == "zcore_evaluation"
    assert [t["name"] for t in out["plot"]] == ["topk", "random"]
    core = E.evaluate_coreset(X, y, methods=("topk",), **FAST)
    assert out["table"][2]["accuracy"].startswith(f"{100 * core.cell('topk', 0.9)['mean']:.2f}")
    assert isinstance(ds.get_run_info("zcore_evaluation").config, runs.EvaluationRunConfig)
    op = foo.get_operator(EVALUATE)
    assert op.config.default_choice_to_delegated and op.config.allow_immediate_execution
    # the SDK call, another key
    r = op(ds, **{**OP_PARAMS, "run_key": "again", "prune": [0.5]})
    assert r.error is None, r.error
    assert len(r.result["table"]) == 2
    # the App's output: a table with the summary's columns and a plotly plot of the traces
    from fiftyone.operators.executor import ExecutionContext

    ctx = ExecutionContext(request_params={"dataset_name": ds.name, "results": out})
    props = op.resolve_output(ctx).type.properties
    assert type(props["table"].view).__name__ == "TableView"
    assert [c.key for c in props["table"].view.columns] == list(out["table"][0])
    assert type(props["plot"].view).__name__ == "PlotlyView"


def test_operator_form_marks_invalid_input(datasets):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    ds, _, _ = _labelled_dataset(datasets)
    before = _snapshot(ds)
    bad = [
        ({"prune": "0.5, 1.5"}, r"in \(0, 1\)"),
        ({"prune": "half"}, "comma-separated"),
        ({"methods": ["nope"]}, "unknown selection method"),
    ]
    for params, match in bad:
        with pytest.raises(ExecutionError, match=match):
            foo.execute_operator(EVALUATE, ctx={"dataset": ds, "params": {**OP_PARAMS, **params}})
    # too few labels: the first class only (cheap check in the form)
    with pytest.raises(ExecutionError, match="at least 2 classes"):
        foo.execute_operator(
            EVALUATE,
            ctx={"view": ds.limit(30), "params": {**OP_PARAMS, "view_target": "CURRENT_VIEW"}},
        )
    assert _snapshot(ds) == before


def test_operator_delegated_runs_in_process(datasets):
    import fiftyone.operators as foo
    from conftest import run_queued

    from zcore.evaluation import load_evaluation

    ds, _, _ = _labelled_dataset(datasets)
    r = foo.execute_operator(
        EVALUATE, ctx={"dataset": ds, "params": OP_PARAMS}, request_delegation=True
    )
    assert r.error is None, r.error
    assert "zcore_evaluation" not in ds.list_runs()  # only queued so far
    op = run_queued(ds)  # the only operation queued
    assert op.run_state == "completed", op.result and op.result.error
    assert len(op.result.result["table"]) == 4
    # progress reached the operation's status through ctx.set_progress
    assert op.status.progress == 1.0 and op.status.label.startswith("evaluating coresets")
    ds.reload()
    assert load_evaluation(ds).info["methods"] == ["topk"]
