"""The option table (zcore.core.config): each default and constraint written once, and everything
generated from it (ScoreConfig, Execution, zcore_scores' keywords, signature and docs); the one
progress contract. No FiftyOne here."""

import inspect
import pickle

import numpy as np
import pytest

from zcore import zcore_scores
from zcore.core import (
    Components,
    Execution,
    ScoreConfig,
    combine_components,
    default_n_samples,
    score_components,
)
from zcore.core.config import (
    EXECUTION_OPTIONS,
    LAW_OPTIONS,
    resolve,
    split_options,
)
from zcore.core.progress import as_progress, make_progress


def _data(n=60, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_defaults_come_from_the_table():
    law = {s.name: s.default for s in LAW_OPTIONS}
    assert law == {
        "n_samples": None,
        "sample_dim": 2,
        "redund_nn": 1000,
        "redund_exp": 4,
        "rand_init": True,
    }
    config = ScoreConfig()
    assert config.to_dict() == {**law, "redund_exp": 4.0}
    run = Execution()
    assert run.to_dict() == {s.name: s.default for s in EXECUTION_OPTIONS}
    assert ScoreConfig.options() == LAW_OPTIONS and Execution.options() == EXECUTION_OPTIONS
    for spec in LAW_OPTIONS + EXECUTION_OPTIONS:
        assert spec.help and spec.label and spec.doc_type, spec.name
        assert spec.kind in {"int", "float", "bool", "str", "object"}


def test_zcore_scores_signature_lists_the_table():
    sig = inspect.signature(zcore_scores)
    for spec in LAW_OPTIONS + EXECUTION_OPTIONS:
        param = sig.parameters[spec.name]
        assert param.default == spec.default and param.kind is param.KEYWORD_ONLY, spec.name
    assert list(sig.parameters)[:6] == ["embeddings", *(s.name for s in LAW_OPTIONS)]
    for name, default in (("seed", None), ("progress", False), ("config", None)):
        assert sig.parameters[name].default == default
    doc = zcore_scores.__doc__
    for spec in LAW_OPTIONS + EXECUTION_OPTIONS:
        assert f"{spec.name} : {spec.doc_type}, default=" in doc
    assert "triangular distribution" in doc  # the description of the law stays


@pytest.mark.parametrize(
    "options, match",
    [
        ({"sample_dim": 0}, "sample_dim must be >= 1"),
        ({"n_samples": 0}, "n_samples must be >= 1"),
        ({"redund_nn": 0}, "redund_nn must be >= 1"),
        ({"redund_nn": 2.5}, "redund_nn must be an int"),
        ({"redund_exp": -1}, "redund_exp must be >= 0"),
        ({"redund_exp": float("inf")}, "redund_exp must be finite"),
        ({"rand_init": "yes"}, "rand_init must be a bool"),
        ({"sample_dims": 2}, "unknown ScoreConfig option.*valid: n_samples, sample_dim"),
    ],
)
def test_score_config_rejects_bad_values(options, match):
    with pytest.raises(ValueError, match=match):
        ScoreConfig(**options)
    if "sample_dims" not in options:  # the same message through zcore_scores
        with pytest.raises(ValueError, match=match):
            zcore_scores(_data(), **options)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"engine": "fast"}, "unknown engine 'fast'; valid engines: 'auto', 'numpy'"),
        ({"backend": "spark"}, "unknown backend 'spark'; valid backends: 'local', 'dask'"),
        ({"num_workers": 0}, "num_workers must be >= 1"),
        ({"engine": "numpy", "device": "cuda"}, "CPU only"),
        ({"engine": "torch", "use_multiprocessing": True}, "torch engine runs in one process"),
        ({"client": "tcp://x:1"}, "only with backend='dask'"),
    ],
)
def test_execution_checks_every_combination_once(options, match):
    with pytest.raises(ValueError, match=match):
        Execution(**options)


def test_a_torch_device_object_is_accepted_by_name():
    torch = pytest.importorskip("torch")
    assert Execution(device=torch.device("cpu")).device == "cpu"
    with pytest.raises(ValueError, match="device must be a string"):
        Execution(device=3)


def test_execution_resolves_the_engine():
    from zcore.core import engine_numba

    assert Execution(engine="NUMPY").engine_name == "numpy"
    assert Execution().engine_name == ("numba" if engine_numba.AVAILABLE else "numpy")
    assert Execution(engine="numpy").engine_impl().name == "numpy"


def test_configs_are_frozen_comparable_and_round_trip():
    config = ScoreConfig(n_samples=500, redund_nn=7, redund_exp=2.5, rand_init=False)
    with pytest.raises(AttributeError, match="frozen"):
        config.sample_dim = 3
    assert ScoreConfig.from_dict(config.to_dict()) == config
    # a run record holds other keys too: ignored
    assert ScoreConfig.from_dict({**config.to_dict(), "score_field": "s", "seed": 1}) == config
    assert config.replace(sample_dim=3).sample_dim == 3 and config.sample_dim == 2
    with pytest.raises(ValueError, match="sample_dim must be >= 1"):
        config.replace(sample_dim=0)
    assert pickle.loads(pickle.dumps(config)) == config
    assert hash(ScoreConfig(redund_nn=7)) == hash(ScoreConfig(redund_nn=7.0))
    run = Execution(engine="numpy", use_multiprocessing=True, num_workers=2)
    assert Execution.from_dict(run.to_dict()) == run
    assert "redund_nn=7" in repr(config)


def test_n_points_resolves_the_default():
    assert ScoreConfig().n_points(30) == 300 == default_n_samples(30)
    assert ScoreConfig().n_points(10**6) == 1_000_000
    assert ScoreConfig(n_samples=42).n_points(30) == 42


def test_unknown_option_and_conflicts_are_clear_errors():
    X = _data()
    with pytest.raises(ValueError, match=r"unknown option\(s\) redund_n; valid options: n_samples"):
        zcore_scores(X, redund_n=5)
    with pytest.raises(ValueError, match="either in config= or as keywords"):
        zcore_scores(X, config=ScoreConfig(redund_nn=5), redund_nn=5)
    with pytest.raises(ValueError, match="either in execution= or as keywords"):
        zcore_scores(X, execution=Execution(), engine="numpy")
    with pytest.raises(TypeError, match="config must be a ScoreConfig"):
        zcore_scores(X, config={"redund_nn": 5})
    law, run = split_options({"redund_nn": 5, "engine": "numpy"})
    assert law == {"redund_nn": 5} and run == {"engine": "numpy"}
    config, execution = resolve(redund_nn=5, engine="numpy")
    assert config.redund_nn == 5 and execution.engine_name == "numpy"


def test_objects_and_keywords_give_the_same_scores():
    X = _data()
    kw = {"n_samples": 300, "redund_nn": 10, "rand_init": False}
    by_keywords = zcore_scores(X, seed=4, engine="numpy", **kw)
    by_objects = zcore_scores(
        X, seed=4, config=ScoreConfig(**kw), execution=Execution(engine="numpy")
    )
    np.testing.assert_array_equal(by_keywords, by_objects)
    parts = score_components(
        X, config=ScoreConfig(**kw), execution=Execution(engine="numpy"), seed=4
    )
    assert isinstance(parts, Components) and parts.coverage.sum() == 300
    np.testing.assert_array_equal(combine_components(*parts, rand_init=False), by_keywords)


def test_progress_contract_reports_every_stage_with_one_callable():
    X = _data()
    seen = []
    zcore_scores(
        X,
        n_samples=500,
        redund_nn=5,
        seed=0,
        progress=lambda d, t, label: seen.append((d, t, label)),
    )
    labels = list(dict.fromkeys(label for _, _, label in seen))
    assert labels == [
        "checking the embeddings",
        "loading the engine (compiled on first use)",
        "dimension statistics",
        "preparing the engine",
        "scoring",
    ]
    assert seen[-1] == (500, 500, "scoring")
    for label in labels:
        stage = [(d, t) for d, t, lab in seen if lab == label]
        assert all(0 <= d <= t for d, t in stage), label
        assert all(b[0] >= a[0] for a, b in zip(stage, stage[1:])), label
    assert ("dimension statistics", 6) in {(lab, t) for _, t, lab in seen}


def test_progress_adapter():
    assert as_progress(None) is None and as_progress(False) is None
    with pytest.raises(ValueError, match="progress must be a bool or a callable"):
        as_progress("yes")
    with pytest.raises(ValueError, match=r"progress\(done, total, label\)"):
        as_progress(lambda done, total: None)
    calls = []
    with make_progress(lambda *a: calls.append(a), 10, "scoring") as advance:
        advance(4)
        advance(6)
    assert calls == [(4, 10, "scoring"), (10, 10, "scoring")]
    with make_progress(True, 3, "scoring") as advance:  # a tqdm bar, closed at the end
        advance(3)
    X = _data(30)
    zcore_scores(X, n_samples=50, redund_nn=5, seed=0, progress=True)
