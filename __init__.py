"""zcore FiftyOne operators: ``compute_zcore``, ``select_coreset`` and ``evaluate_coreset``.

The operators only read parameters (with defaults: forms' defaults are not applied to programmatic
calls), build their forms, and call the FiftyOne layer in ``zcore/``.
"""

import importlib.util
import os
import sys

import fiftyone.operators as foo
import fiftyone.operators.types as types


def _zcore_package():
    """This plugin's ``zcore`` package, imported under one name (``zcore``) however the plugin
    itself is loaded: FiftyOne's registry imports this file under a package name of its own (the
    plugin's folder), pytest as a plain module. Importing ``.zcore`` relatively would make a second
    copy of every module, with its own classes and registries, beside the ``zcore`` that Python
    callers import."""
    here = os.path.dirname(os.path.abspath(__file__))
    mine = os.path.join(here, "zcore")
    loaded = sys.modules.get("zcore")
    if loaded is None:
        if here not in sys.path:
            sys.path.insert(0, here)
        import zcore as loaded
    found = os.path.dirname(os.path.realpath(loaded.__file__))
    if found != os.path.realpath(mine):
        raise ImportError(
            f"the zcore plugin at {here} found another 'zcore' package at {found}; uninstall it "
            f"(pip uninstall zcore) or install this one (pip install -e {here})"
        )
    return loaded


_zcore_package()

from zcore import collection as zc  # noqa: E402
from zcore.core import dask_access  # noqa: E402
from zcore.core.config import LAW_OPTIONS, Execution, ScoreConfig, default_n_samples  # noqa: E402
from zcore.core.registry import DEFAULT_METHOD, app_methods, get_spec  # noqa: E402
from zcore.forms import (  # noqa: E402
    BALANCE_BY_HELP,
    BALANCE_LABELS,
    balance_radio,
    dropdown,
    form_error,
)
from zcore.levels import is_vector_field  # noqa: E402
from zcore.panel import CoresetPanel, default_score_field, score_fields  # noqa: E402

#: From this many target samples, the compute form suggests Schedule, and defaults to it.
SCHEDULE_ABOVE = 20_000
_EMBED_SOURCES = ("field", "model")
#: Environment variable of the server: the directory under which the operator may keep embedding
#: caches (``cache_dir`` is refused from the App/operator when unset).
CACHE_ROOT_ENV = "ZCORE_CACHE_ROOT"
_SIZE_MODES = ("size", "fraction", "threshold")


class ComputeZcore(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="compute_zcore",
            label="ZCore: compute coreset scores",
            description=(
                "Score every sample from its embedding (coverage minus redundancy; no labels, "
                "no training) and store the score in a field. Higher = keep."
            ),
            icon="/assets/zcore.svg",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=False,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.view_target(ctx, action_description="Score")
        view = ctx.target_view()
        n = view.count()
        if n < 3:  # nothing else to fill in: the reason right under the target
            form_error(inputs, "too_few", f"The target has {n} sample(s); ZCore needs at least 3")
            return types.Property(inputs, view=types.View(label="Compute ZCore scores"))

        _embeddings_inputs(ctx, inputs)
        _score_field_input(ctx, inputs)
        inputs.int(
            "seed",
            label="Seed",
            description="Leave empty for a fresh seed; the seed used is recorded with the run",
            required=False,
            min=0,
        )
        if n >= SCHEDULE_ABOVE:
            inputs.view(
                "schedule_hint",
                types.Notice(
                    label=f"{n:,} samples: Schedule runs this in the background (with progress "
                    "in the Coreset panel) instead of keeping the App busy"
                ),
            )
        from zcore.core.kernels import compiled_cache_ready

        if not compiled_cache_ready():
            inputs.view(
                "compile_hint",
                types.Notice(
                    label="The first run on this server compiles the scoring engine (about half "
                    "a minute, once); later runs start at once"
                ),
            )
        inputs.bool(
            "advanced",
            label="Advanced options",
            description="The score's hyperparameters, workers, GPU, cache, Dask, saving a view",
            default=False,
        )
        if _show_advanced(ctx.params):
            _advanced_compute_inputs(ctx, inputs, n)
        return types.Property(inputs, view=types.View(label="Compute ZCore scores"))

    def resolve_execution_options(self, ctx):
        """Schedule (delegate) is the default choice for a large target."""
        from fiftyone.operators.executor import ExecutionOptions

        delegate = self.resolve_delegation(ctx)
        if delegate is not None:
            return ExecutionOptions(
                allow_immediate_execution=not delegate, allow_delegated_execution=delegate
            )
        return ExecutionOptions(
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=ctx.target_view().count() >= SCHEDULE_ABOVE,
        )

    def resolve_delegation(self, ctx):
        return ctx.params.get("delegate", None)

    def execute(self, ctx):
        p = ctx.params
        # only the clusters the server's owner allows (a cluster can run code in this process)
        scheduler = dask_access.check_operator_scheduler(p.get("dask_scheduler"))
        if scheduler is not None and not ctx.delegated:
            raise ValueError(
                "scoring on a Dask cluster runs only in a delegated (scheduled) operation"
            )
        # the score's options, from their one table, checked before anything is read
        config = ScoreConfig(**{spec.name: p.get(spec.name, spec.default) for spec in LAW_OPTIONS})
        num_workers = int(p.get("num_workers") or 1)
        use_mp = bool(ctx.delegated) and num_workers > 1 and scheduler is None
        execution = Execution(
            device=p.get("device") or None,
            use_multiprocessing=use_mp,
            num_workers=num_workers if use_mp or scheduler else None,
            backend="local" if scheduler is None else "dask",
            client=None if scheduler in (None, "local") else scheduler,
        )
        view = ctx.target_view()
        score_field = p.get("score_field") or zc.DEFAULT_SCORE_FIELD
        source = p.get("embeddings_source") or ("model" if p.get("model") else "field")
        model = None
        embeddings = p.get("embeddings") or None
        if source == "model":
            from zcore.models import load_model

            model = load_model(
                p.get("model") or "efficientnet-lite0",
                arch=p.get("clip_arch") or None,
                pretrained=p.get("clip_pretrained") or None,
                zoo_name=p.get("zoo_name") or None,
            )
            embeddings = p.get("embeddings_field") or _default_embeddings_field(p)

        cache_dir = _cache_dir(p)

        overwrite = bool(p.get("overwrite", False))
        view_name = p.get("view_name") or "zcore_coreset"
        if p.get("save_coreset", False):  # every check before anything is written
            size_kw = _size_kwargs(p)
            zc.check_coreset_request(view, **size_kw, view_name=view_name, overwrite=overwrite)

        def progress(done, total, label):
            counts = f" {done:,.0f}/{total:,.0f}" if total > 1 else ""
            ctx.set_progress(progress=done / total if total else 0.0, label=label + counts)

        results = zc.compute_zcore(
            view,
            embeddings=embeddings,
            model=model,
            score_field=score_field,
            run_key=p.get("run_key") or None,
            overwrite=bool(p.get("overwrite", False)),
            seed=p.get("seed", None),
            config=config,
            execution=execution,
            component_fields=bool(p.get("component_fields", False)),
            batch_size=p.get("batch_size", 32),
            progress=progress,
            cache_dir=cache_dir,
        )
        out = {
            "score_field": score_field,
            "num_scored": results.num_scored,
            "num_missing": results.num_missing,
            "seed": results.seed,
        }
        # seconds as numbers for programs, and as text with one precision for the App
        out.update({k: round(v, 3) for k, v in results.timings.items()})
        out.update({k[:-2] + "_time": f"{v:.2f} s" for k, v in results.timings.items()})
        if p.get("save_coreset", False):
            coreset = zc.select_coreset(view, score_field=score_field, **size_kw)
            out["coreset_size"] = zc.save_coreset(
                view, coreset, view_name=view_name, overwrite=overwrite
            )
            out["view_name"] = view_name
        if not ctx.delegated:
            ctx.trigger("reload_dataset")
        return out

    def resolve_output(self, ctx):
        outputs = types.Object()
        results = ctx.results or {}
        outputs.str("score_field", label="Score field")
        outputs.int("num_scored", label="Samples scored")
        outputs.int("num_missing", label="Samples without embeddings (no score)")
        outputs.int("seed", label="Seed")
        if "embed_s" in results:
            outputs.str("embed_time", label="Embedding time")
        outputs.str("score_time", label="Scoring time")
        outputs.str("total_time", label="Total time")
        if "coreset_size" in results:
            outputs.int("coreset_size", label="Coreset size")
            outputs.str("view_name", label="Saved view")
        return types.Property(outputs, view=types.View(label="ZCore scores computed"))

    def __call__(
        self,
        sample_collection,
        *,
        embeddings=None,
        model=None,
        delegate=False,
        delegation_target=None,
        **params,
    ):
        """Run the operator from Python.

        Example::

            import fiftyone.operators as foo

            compute_zcore = foo.get_operator("@zcore/zcore/compute_zcore")
            compute_zcore(dataset, embeddings="clip_embeddings", seed=0)
            compute_zcore(view, model="efficientnet-lite0", delegate=True)  # schedule it

        Keyword arguments are the operator's parameters (``score_field``, ``n_samples``,
        ``redund_nn``, ``seed``, ``num_workers``, ``cache_dir``, ``dask_scheduler``, ...).
        ``model`` is a key of :data:`zcore.models.MODEL_CHOICES`.
        """
        ctx = _sdk_ctx(sample_collection)
        params = dict(params)
        if model is not None:
            params.update(embeddings_source="model", model=model)
            if embeddings is not None:
                params["embeddings_field"] = embeddings
        elif embeddings is not None:
            params.update(embeddings_source="field", embeddings=embeddings)
        return foo.execute_operator(
            self.uri,
            ctx,
            params=params,
            request_delegation=delegate,
            delegation_target=delegation_target,
        )


class SelectCoreset(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="select_coreset",
            label="ZCore: select coreset",
            description="Keep the top samples by score: save them as a view and/or tag them",
            icon="/assets/coreset.svg",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.view_target(ctx, action_description="Select from")
        view = ctx.target_view()
        fields = _score_fields(view)
        if not fields:
            inputs.view(
                "no_scores",
                types.Error(
                    label="No score field",
                    description="Run 'ZCore: compute coreset scores' first",
                ),
            )
            return types.Property(inputs)
        default = default_score_field(fields)  # zcore_score (or <patches>.zcore_score) first
        inputs.enum(
            "score_field", fields, default=default, label="Score field", view=dropdown(fields)
        )
        score_field = ctx.params.get("score_field") or default
        n_scored = view.exists(score_field).count()
        if n_scored == 0:
            form_error(
                inputs,
                "no_scored",
                f"No sample of the target has a '{score_field}' score: choose another target "
                "or compute the scores first",
            )
            return types.Property(inputs)
        method = _method_inputs(ctx, inputs, view)
        _size_inputs(ctx, inputs, n_scored)
        n_keep = _preview(ctx, inputs, view, score_field, method, n_scored)
        _check_balance(ctx, inputs, view, n_keep)
        _check_include(ctx, inputs, view, n_keep)

        dataset = view._root_dataset
        name_prop = inputs.str(
            "view_name",
            label="Save as view",
            description="Leave empty to not save",
            required=False,
            default=_free_view_name(dataset, "zcore_coreset"),
        )
        inputs.str("tag", label="Tag samples", description="Leave empty to not tag", required=False)
        inputs.bool("overwrite", label="Overwrite an existing saved view", default=False)
        inputs.bool("show", label="Show the coreset in the App", default=True)
        name = ctx.params.get("view_name")
        try:
            zc.check_view_name(
                dataset,
                name,
                overwrite=bool(ctx.params.get("overwrite", False)),
                remedy="type another name, or tick 'Overwrite an existing saved view'",
            )
        except ValueError as e:
            name_prop.invalid = True
            name_prop.error_message = str(e)
        return types.Property(inputs, view=types.View(label="Select coreset"))

    def execute(self, ctx):
        view = ctx.target_view()
        p = ctx.params
        score_field = p.get("score_field") or zc.DEFAULT_SCORE_FIELD
        view_name = p.get("view_name") or None
        tag = p.get("tag") or None
        overwrite = bool(p.get("overwrite", False))
        size_kw = _size_kwargs(p)
        # every check before anything is written (a method records its run)
        zc.check_coreset_request(view, **size_kw, view_name=view_name, overwrite=overwrite)
        coreset = zc.select_coreset(
            view, score_field=score_field, **size_kw, **_method_kwargs(ctx, p)
        )
        count = zc.save_coreset(view, coreset, view_name=view_name, tag=tag, overwrite=overwrite)
        if p.get("show", True) and not ctx.delegated:
            # set_view(name=...) of a view saved in this same call is not found by the App
            # (its saved-view list is stale until a reload): show the stages (docs/app.md)
            ctx.ops.set_view(view=coreset)
        return {"count": count, "view_name": view_name or "", "tag": tag or ""}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("count", label="Samples kept")
        outputs.str("view_name", label="Saved view")
        outputs.str("tag", label="Tag")
        return types.Property(outputs, view=types.View(label="Coreset selected"))

    def __call__(self, sample_collection, *, delegate=False, **params):
        """Run the operator from Python, e.g.
        ``foo.get_operator("@zcore/zcore/select_coreset")(dataset, fraction=0.3, view_name="core")``.
        """
        params = dict(params)
        given = [m for m in _SIZE_MODES if params.get(m) is not None]
        if len(given) != 1:
            raise ValueError("pass exactly one of size, fraction or threshold")
        params["size_mode"] = given[0]
        params.setdefault("show", False)
        return foo.execute_operator(
            self.uri, _sdk_ctx(sample_collection), params=params, request_delegation=delegate
        )


class EvaluateCoreset(foo.Operator):
    """Does the coreset beat random on the labels of the target? (zcore.evaluate_coreset)"""

    @property
    def config(self):
        return foo.OperatorConfig(
            name="evaluate_coreset",
            label="ZCore: evaluate coreset",
            description=(
                "On the labelled samples: linear-probe accuracy of each method's coreset against "
                "random subsets of the same size, at several prune rates (mean ± std over seeds)"
            ),
            icon="/assets/coreset.svg",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,
        )

    def resolve_input(self, ctx):
        from zcore import evaluation as ze

        inputs = types.Object()
        inputs.view_target(ctx, action_description="Evaluate on")
        ze.form_inputs(inputs, ctx.target_view(), ctx.params)
        return types.Property(inputs, view=types.View(label="Evaluate coreset selection"))

    def execute(self, ctx):
        from zcore import evaluation as ze

        p = ctx.params

        def progress(done, total, label):
            counts = f" {done:,.0f}/{total:,.0f}" if total > 1 else ""
            ctx.set_progress(progress=done / total if total else 0.0, label=label + counts)

        result = ze.evaluate_coreset(
            ctx.target_view(),
            label_field=p.get("label_field"),
            embeddings=p.get("embeddings") or None,
            score_field=p.get("score_field") or None,
            methods=ze.parse_methods(p.get("methods")),
            prune=ze.parse_prune(p.get("prune")),
            seeds=p.get("seeds") or ze.E.DEFAULT_SEEDS,
            seed=p.get("seed", None),
            run_key=p.get("run_key") or ze.DEFAULT_RUN_KEY,
            overwrite=bool(p.get("overwrite", False)),
            progress=progress,
        )
        return {
            "table": ze.table_rows(result),
            "plot": result.plot_traces(),
            "layout": result.plot_layout(),
            "rule": result.rule,
            "run_key": result.info["run_key"],
            "n_labelled": result.info["n_labelled"],
            "n_test": result.info["n_test"],
            "markdown": result.to_markdown(),
        }

    def resolve_output(self, ctx):
        from zcore.evaluation import TABLE_COLUMNS

        outputs = types.Object()
        results = ctx.results or {}
        table = types.TableView()
        for key, label in TABLE_COLUMNS:
            table.add_column(key, label=label)
        outputs.list("table", types.Object(), label="Linear-probe test accuracy", view=table)
        outputs.plot("plot", layout=results.get("layout"), config={"displayModeBar": False})
        outputs.str("rule", label="Mark")
        outputs.int("n_labelled", label="Labelled samples evaluated")
        outputs.int("n_test", label="Held out for testing")
        outputs.str("run_key", label="Recorded as run")
        return types.Property(outputs, view=types.View(label="Coreset evaluation"))

    def __call__(self, sample_collection, *, delegate=False, **params):
        """Run the operator from Python, e.g. ``foo.get_operator(
        "@zcore/zcore/evaluate_coreset")(dataset, label_field="ground_truth", embeddings="emb")``
        (``methods`` and ``prune`` as lists)."""
        params = dict(params)
        prune = params.get("prune")
        if prune is not None and not isinstance(prune, str):  # the form's input is text
            params["prune"] = ", ".join(map(str, [prune] if isinstance(prune, float) else prune))
        return foo.execute_operator(
            self.uri, _sdk_ctx(sample_collection), params=params, request_delegation=delegate
        )


# --- form helpers ------------------------------------------------------------------------------


#: Parameters of the compute form's "Advanced options".
_ADVANCED = (
    *(spec.name for spec in LAW_OPTIONS),
    "component_fields",
    "num_workers",
    "device",
    "cache_dir",
    "dask_scheduler",
    "save_coreset",
)


def _show_advanced(params):
    """Whether the compute form shows its advanced inputs: when ticked in the App, and for a
    programmatic call (which sends no ``advanced``) that sets any of them, so that FiftyOne's
    validation of the form checks them too."""
    if "advanced" in params:
        return bool(params["advanced"])
    return any(params.get(name) is not None for name in _ADVANCED)


#: Most sampling points the App accepts (the cost and the memory grow with them: 10^12 points
#: would need terabytes); Python callers are not capped.
MAX_APP_POINTS = 100_000_000


def _law_input(inputs, spec, n):
    """One input of the score law's option ``spec`` (label, help, default and bounds from the
    option table)."""
    description = spec.help
    if spec.name == "n_samples":
        description = (
            f"Random points drawn in embedding space; empty: min(1,000,000, 10 x N) = "
            f"{default_n_samples(max(n, 1)):,} for the {n:,} target samples. More points give "
            f"more stable scores at a proportional cost (at most {MAX_APP_POINTS:,} here)"
        )
    if spec.kind == "bool":
        inputs.bool(spec.name, label=spec.label, description=description, default=spec.default)
        return
    add = inputs.int if spec.kind == "int" else inputs.float
    kw = {"min": spec.minimum}
    if spec.name == "n_samples":
        kw["max"] = MAX_APP_POINTS
    if spec.default is None:
        add(spec.name, label=spec.label, description=description, required=False, **kw)
    else:
        add(spec.name, label=spec.label, description=description, default=spec.default, **kw)


def _advanced_compute_inputs(ctx, inputs, n):
    """The compute form's "Advanced options": the score law's options (generated from their one
    table, :data:`zcore.core.config.LAW_OPTIONS`), the components, where to run, the cache, and
    saving a coreset view."""
    for spec in LAW_OPTIONS:
        _law_input(inputs, spec, n)
    inputs.bool(
        "component_fields",
        label="Also store the score's components",
        description=(
            "Write <score field>_coverage (times the sample was the nearest to a sampling "
            "point) and <score field>_redundancy (its total redundancy penalty)"
        ),
        default=False,
    )
    inputs.int(
        "num_workers",
        label="Worker processes",
        description="Used when the operation is delegated (scheduled); immediate runs use one",
        default=1,
        min=1,
        max=os.cpu_count() or 1,
    )
    inputs.str(
        "device",
        label="GPU device (optional)",
        description=(
            "Leave empty to score on the CPU with the compiled engine; e.g. 'cuda' scores with "
            "the torch engine on a GPU (same scores)"
        ),
        required=False,
    )
    cache_root = os.environ.get(CACHE_ROOT_ENV)
    if cache_root:  # only where the server's owner allowed a place for caches
        inputs.str(
            "cache_dir",
            label="Embeddings cache directory (optional)",
            description=(
                "Keep the embedding matrix here as a memory-mapped file, so that re-runs "
                "with other settings skip reading the database (invalidated when samples "
                f"change). A sub-directory of {cache_root}"
            ),
            required=False,
        )
    if importlib.util.find_spec("distributed") is not None:
        _dask_scheduler_input(ctx, inputs)

    inputs.bool(
        "save_coreset",
        label="Also save a coreset view",
        description="Save the top-scoring samples as a named view when scoring finishes",
        default=False,
    )
    if ctx.params.get("save_coreset", False):
        _size_inputs(ctx, inputs, n)
        inputs.str(
            "view_name",
            label="Saved view name",
            default="zcore_coreset",
            required=False,
        )


def _dask_scheduler_input(ctx, inputs):
    """A dropdown of the Dask clusters the server's owner allows: ``local`` and the addresses
    of ``ZCORE_DASK_SCHEDULERS`` (:mod:`zcore.core.dask_access`); no free-text address. Another
    value (a programmatic call) marks the field invalid with the check's message."""
    try:
        choices = dask_access.scheduler_choices()
    except ValueError as e:  # a malformed list: say so in the form, offer local only
        inputs.view("dask_schedulers_error", types.Warning(label=str(e)))
        choices = [dask_access.LOCAL]
    dropdown = types.Dropdown()
    for choice in choices:
        local = choice == dask_access.LOCAL
        dropdown.add_choice(
            choice, label="local: a LocalCluster of the worker processes" if local else choice
        )
    prop = inputs.enum(
        "dask_scheduler",
        dropdown.values(),
        label="Dask cluster (optional, delegated runs)",
        description=(
            "Score on a Dask cluster (same scores): 'local', or a scheduler that the server's "
            f"owner allows in {dask_access.SCHEDULERS_ENV}. A cluster can run code in the process "
            "that scores and receives the embeddings: only clusters you control belong there"
        ),
        view=dropdown,
        required=False,
    )
    try:
        dask_access.check_operator_scheduler(ctx.params.get("dask_scheduler"))
    except (ValueError, ImportError) as e:
        prop.invalid = True
        prop.error_message = str(e)


def _cache_dir(params):
    """``cache_dir`` of an operator call, resolved under the server's ``ZCORE_CACHE_ROOT``: a
    relative path is taken inside it, and any path (after resolving ``..`` and symlinks) must
    stay inside it."""
    value = params.get("cache_dir") or None
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"cache_dir must be a directory path; got {type(value).__name__}")
    root = os.environ.get(CACHE_ROOT_ENV)
    if not root:
        raise ValueError(
            f"cache_dir is not available from the operator on this server: its owner must set "
            f"{CACHE_ROOT_ENV} to the directory under which caches may be written"
        )
    root = os.path.realpath(os.path.expanduser(root))
    path = os.path.realpath(os.path.join(root, value))
    if os.path.commonpath([root, path]) != root:
        raise ValueError(
            f"cache_dir {value!r} is outside {CACHE_ROOT_ENV} ({root}); pass a sub-directory "
            "of it (or a relative path)"
        )
    return path


def _sdk_ctx(sample_collection):
    from fiftyone.core.dataset import Dataset

    if isinstance(sample_collection, Dataset):
        return {"dataset": sample_collection, "params": {}}
    return {"view": sample_collection, "params": {"view_target": "CURRENT_VIEW"}}


def _free_view_name(dataset, base):
    """``base``, or ``base_2``, ``base_3``... : the first name no saved view has (by name or
    slug), so a default never opens the form in an error state."""
    name, i = base, 1
    while True:
        try:
            zc.check_view_name(dataset, name)
            return name
        except ValueError:
            i += 1
            name = f"{base}_{i}"


def _preview(ctx, inputs, view, score_field, method, n_scored):
    """How many samples the request keeps, before Execute; an invalid request (a size that
    keeps nothing, a threshold above every score, a threshold with a method that takes a
    budget) disables Execute with its reason. Returns the count, or ``None`` when invalid."""
    kwargs = _size_kwargs(
        ctx.params,
        {
            "size_mode": "fraction",
            "size": max(1, n_scored // 10),
            "fraction": 0.1,
            "threshold": 0.5,
        },
    )
    spec = get_spec(method)
    try:
        if "threshold" in kwargs and method not in ("topk", DEFAULT_METHOD):
            raise ValueError(
                f"a score threshold applies to 'Top scores' only; keep a count or a fraction "
                f"with '{spec.label}'"
            )
        n_keep = zc.select_coreset(view, score_field=score_field, method="topk", **kwargs).count()
    except ValueError as e:
        form_error(inputs, "preview", str(e))
        return None
    if n_keep == 0:
        if "threshold" in kwargs:
            top = view.bounds(score_field)[1]
            why = (
                f"No score reaches {kwargs['threshold']:g} (the highest is {top:.3f}): "
                "lower the threshold"
            )
        else:
            why = "This keeps no sample: raise the count or the fraction"
        form_error(inputs, "preview", why)
        return None
    if method == "topk" or "threshold" in kwargs:
        how = f"highest '{score_field}' first"
    elif method == DEFAULT_METHOD:
        how = "by the default method"
    else:
        how = f"by {spec.label}"
    upto = "Up to " if method == "target" else ""
    inputs.view(
        "preview",
        types.Notice(label=f"{upto}{n_keep:,} of {n_scored:,} scored samples will be kept ({how})"),
    )
    return n_keep


def _vector_fields(view):
    """Vector fields of ``view`` that hold values (a declared field with no values, e.g. an
    unused ``logits``, is not offered as embeddings)."""
    schema = view.get_field_schema(flat=True)
    names = [name for name, field in schema.items() if is_vector_field(field)]
    if view._has_frame_fields():  # frame-level embeddings: every frame is scored
        frame_schema = view.get_frame_field_schema(flat=True)
        names += [
            "frames." + name for name, field in frame_schema.items() if is_vector_field(field)
        ]
    if getattr(view, "_is_patches", False):
        # embeddings stored as label attributes are often undeclared; arrays show up untyped
        prefix = view.patches_field + "."
        dynamic = view.get_dynamic_field_schema() or {}
        names += [
            name
            for name, field in dynamic.items()
            if name.startswith(prefix) and (field is None or is_vector_field(field))
        ]
    return sorted(f for f in set(names) if view.count(f) > 0)


def _score_fields(view):
    # top-level float fields, and the patches' float attributes on a patches view
    return score_fields(view)


def _embeddings_inputs(ctx, inputs):
    from zcore.models import MODEL_CHOICES

    fields = _vector_fields(ctx.target_view())
    source_view = types.RadioGroup(orientation="horizontal")
    source_view.add_choice(
        "field",
        label="Embeddings field",
        description="Use embeddings already stored on the samples",
    )
    source_view.add_choice(
        "model", label="Compute with a model", description="Embed the images first, then score"
    )
    default_source = "field" if fields else "model"
    inputs.enum(
        "embeddings_source",
        _EMBED_SOURCES,
        default=default_source,
        label="Embeddings",
        view=source_view,
    )
    source = ctx.params.get("embeddings_source") or default_source

    if source == "field":
        if not fields:
            inputs.view(
                "no_vectors",
                types.Warning(
                    label="No vector field on this dataset: choose 'Compute with a model'"
                ),
            )
            return
        choices = types.AutocompleteView()
        for f in fields:
            choices.add_choice(f, label=f)
        inputs.enum(
            "embeddings",
            fields,
            default=fields[0],
            required=False,
            label="Vector field",
            view=choices,
        )
        return

    model_view = types.DropdownView()
    for choice in MODEL_CHOICES:
        model_view.add_choice(choice.key, label=choice.label, description=choice.summary)
    keys = [c.key for c in MODEL_CHOICES]
    model = ctx.params.get("model") or keys[0]
    chosen = {c.key: c for c in MODEL_CHOICES}.get(model, MODEL_CHOICES[0])
    inputs.enum(
        "model",
        keys,
        default=keys[0],
        label="Model",
        description=chosen.description,
        view=model_view,
    )
    if model == "open-clip":
        inputs.str("clip_arch", label="open_clip architecture", default="ViT-B-32")
        inputs.str(
            "clip_pretrained",
            label="Pretrained weights",
            description=(
                "An open_clip pretrained tag (needs the model hub) or a local checkpoint path "
                "(works offline)"
            ),
            required=False,
        )
    elif model == "zoo":
        inputs.str(
            "zoo_name",
            label="FiftyOne zoo model",
            default="clip-vit-base32-torch",
            required=False,
            description="Any zoo model that exposes embeddings (needs its weights)",
        )
    inputs.str(
        "embeddings_field",
        label="Store embeddings in",
        default=_default_embeddings_field(ctx.params),
    )


def _default_embeddings_field(params):
    model = params.get("model") or "efficientnet-lite0"
    return model.replace("-", "_").replace(".", "_") + "_embeddings"


def _free_score_field(view, embeddings):
    """``zcore_score``, or ``zcore_score_2``, ... : the first name that no field and no run
    holds, so that the form's default never opens in an error state (and never overwrites)."""
    level = zc.level_of(view, embeddings)
    dataset = view._root_dataset
    name, i = zc.DEFAULT_SCORE_FIELD, 1
    while level.get_field(name) is not None or dataset.has_run(name):
        i += 1
        name = f"{zc.DEFAULT_SCORE_FIELD}_{i}"
    return name


def _score_field_input(ctx, inputs):
    view = ctx.target_view()
    embeddings = (
        ctx.params.get("embeddings") if ctx.params.get("embeddings_source") != "model" else None
    )
    default = _free_score_field(view, embeddings)
    prop = inputs.str(
        "score_field",
        label="Score field",
        default=default,
        required=False,
        description="Float field that receives the scores"
        + (
            f" ('{zc.DEFAULT_SCORE_FIELD}' exists: type it and tick overwrite to replace it)"
            if default != zc.DEFAULT_SCORE_FIELD
            else ""
        ),
    )
    score_field = ctx.params.get("score_field") or default
    try:
        zc._check_field_name(score_field, "score_field")
    except ValueError as e:
        prop.invalid = True
        prop.error_message = str(e)
        return
    # the score lands on patches or frames for such views (see zcore.levels)
    exists = zc.level_of(view, embeddings).get_field(score_field) is not None
    has_run = view._root_dataset.has_run(score_field)
    if exists or has_run:
        inputs.bool(
            "overwrite",
            label=f"Overwrite '{score_field}'",
            description="The field or a run with this key exists; overwrite its values",
            default=False,
        )
        if not ctx.params.get("overwrite", False):
            prop.invalid = True
            prop.error_message = f"'{score_field}' exists: tick overwrite or choose another name"


def _size_inputs(ctx, inputs, n):
    mode_view = types.RadioGroup(orientation="horizontal")
    mode_view.add_choice("fraction", label="Fraction")
    mode_view.add_choice("size", label="Count")
    mode_view.add_choice("threshold", label="Score threshold")
    inputs.enum("size_mode", _SIZE_MODES, default="fraction", label="Keep by", view=mode_view)
    mode = ctx.params.get("size_mode") or "fraction"
    if mode == "size":
        inputs.int(
            "size", label="Number of samples to keep", default=max(1, n // 10), min=0, max=max(n, 0)
        )
    elif mode == "fraction":
        inputs.float(
            "fraction",
            label="Fraction",
            default=0.1,
            min=0.0,
            max=1.0,
            required=False,
            # value_precision: two digits (FiftyOne's SliderView shows six otherwise)
            view=types.SliderView(
                value_precision=2,
                componentsProps={"slider": {"min": 0.0, "max": 1.0, "step": 0.01}},
            ),
        )
    else:
        inputs.float("threshold", label="Keep scores >=", default=0.5)


def _option_input(inputs, option):
    """One form input for a method's :class:`~zcore.core.registry.Option` (its label, help,
    bounds, choices and default come from the spec)."""
    label = option.label or option.name
    if option.kind == "choice":
        inputs.enum(
            option.name,
            list(option.choices),
            default=option.default,
            label=label,
            description=option.help,
        )
    elif option.kind == "int":  # an int, or empty for the automatic default
        inputs.int(
            option.name,
            label=label,
            description=option.help,
            required=False,
            min=option.minimum,
        )
    else:
        inputs.float(
            option.name,
            label=label,
            description=option.help,
            default=option.default,
            min=option.minimum,
            max=option.maximum,
        )


def _method_inputs(ctx, inputs, view):
    """Method choice and its options (from the method registry); returns the chosen method."""
    specs = app_methods()
    method_view = types.DropdownView()
    for spec in specs:
        method_view.add_choice(spec.name, label=spec.label, description=spec.help)
    names = [spec.name for spec in specs]
    inputs.enum("method", names, default=DEFAULT_METHOD, label="Method", view=method_view)
    p = ctx.params
    method = p.get("method") or DEFAULT_METHOD
    spec = get_spec(method)
    for option in spec.options:
        if option.form:
            _option_input(inputs, option)
    if method == "target":
        names = view._root_dataset.list_saved_views()
        if names:
            inputs.enum("target_view", names, label="Target (a saved view)", required=True)
        else:
            inputs.view("no_target", types.Warning(label="Save a view of the target samples first"))
    _balance_inputs(ctx, inputs, view)
    _include_inputs(ctx, inputs, view, spec)
    inputs.float(
        "dedup_threshold",
        label="Remove near-duplicates first (distance)",
        description="L2 distance between normalised embeddings, e.g. 0.05; empty: no removal. "
        "The duplicates are saved as a view",
        required=False,
        min=0.0,
        max=2.0,
    )
    if spec.needs_embeddings or p.get("dedup_threshold") is not None:
        fields = _vector_fields(view)
        if fields:
            recorded = zc.recorded_embeddings(view, p.get("score_field") or zc.DEFAULT_SCORE_FIELD)
            inputs.enum(
                "embeddings",
                fields,
                default=recorded if recorded in fields else fields[0],
                label="Embeddings field",
                description="Default: the field the scores were computed from",
                required=method != DEFAULT_METHOD,
            )
        else:
            inputs.view("no_vectors", types.Error(label="This method needs a vector field"))
    if method != "topk" or p.get("dedup_threshold") is not None:
        inputs.int(
            "seed", label="Seed", description="Empty: a fresh one (recorded)", required=False
        )
        inputs.str(
            "run_key",
            label="Run key",
            description=f"Empty: coreset_{method}",
            required=False,
        )
    return method


def _balance_inputs(ctx, inputs, view):
    """Balance the coreset over a field's values (``select_coreset(balance_by=...)``)."""
    fields = zc.balance_fields(view)
    if not fields:
        return
    inputs.enum(
        "balance_by",
        fields,
        label="Balance by (optional)",
        description=BALANCE_BY_HELP,
        required=False,
        view=dropdown(fields),
    )
    field = ctx.params.get("balance_by") or None
    if field is None:
        return
    inputs.enum("balance", list(BALANCE_LABELS), default="proportional", view=balance_radio())


def _include_inputs(ctx, inputs, view, spec):
    """Grow from tagged samples (``include=<tag>``) and rank the coreset (``ranked``,
    ``rank_field``); only with a budget (not a threshold). The help is the method's spec's."""
    if ctx.params.get("size_mode") == "threshold":
        return
    tags = sorted(view.count_sample_tags())
    if tags:
        inputs.enum(
            "include_tag",
            tags,
            label="Grow from samples tagged (optional)",
            description=f"Samples with this tag: {spec.include_help}",
            required=False,
            view=dropdown(tags),
        )
    saved = view._root_dataset.list_saved_views()
    if saved:
        inputs.enum(
            "include_view",
            saved,
            label="Or grow from a saved view (optional)",
            description=f"Its samples: {spec.include_help}",
            required=False,
        )
    inputs.bool(
        "ranked",
        label="Ranked (label the first ones first)",
        description=f"The coreset in the order its samples enter it as the budget grows: "
        f"{spec.ranking_help}",
        default=False,
    )
    if ctx.params.get("ranked"):
        inputs.str(
            "rank_field",
            label="Write the rank to field",
            description="1 = first; samples not kept get None. Empty: no field",
            required=False,
        )


def _check_include(ctx, inputs, view, n_keep):
    """The included samples must fit the budget of ``n_keep`` (the preview's count), not come
    with balance_by, and the rank field must be new or an int field; the count says how many
    of the kept samples are new."""
    p = ctx.params
    tag = p.get("include_tag") or None
    prop = inputs.properties.get("include_tag")
    saved = p.get("include_view") or None
    if saved is not None and inputs.properties.get("include_view") is not None:
        if tag is not None:
            vprop = inputs.properties["include_view"]
            vprop.invalid = True
            vprop.error_message = "Grow from a tag or from a saved view, not both"
            return
        tag, prop = saved, inputs.properties["include_view"]
        what = f"in the view '{saved}'"
    else:
        what = f"tagged '{tag}'"
    if tag is not None and prop is not None and n_keep is not None:
        if saved is not None:
            try:  # the checks of select_coreset(include=<view>)
                n_inc = len(zc.include_sample_ids(view, view._root_dataset.load_saved_view(saved)))
            except ValueError as e:
                prop.invalid = True
                prop.error_message = f"{e}, or grow from another view"
                return
        else:
            n_inc = view.match_tags(tag).count()
        if p.get("balance_by"):
            prop.invalid = True
            prop.error_message = "Growing from tagged samples does not combine with Balance by"
        elif n_inc > n_keep:
            prop.invalid = True
            prop.error_message = (
                f"{n_inc:,} samples are {what} but {n_keep:,} are kept: keep at least "
                f"{n_inc:,}, or grow from fewer samples"
            )
        else:
            inputs.view(
                "include_preview",
                types.Notice(label=f"{n_inc:,} of them already {what}, {n_keep - n_inc:,} new"),
            )
    rank = inputs.properties.get("rank_field")
    if rank is not None and p.get("rank_field"):
        try:
            zc.check_rank_field(view, p["rank_field"])
        except ValueError as e:
            rank.invalid = True
            rank.error_message = str(e)


def _check_balance(ctx, inputs, view, n_keep):
    """A budget of ``n_keep`` (the preview's count; ``None``: the size is invalid already) must
    keep one sample per value of the balance field."""
    field = ctx.params.get("balance_by") or None
    prop = inputs.properties.get("balance_by")
    if field is None or prop is None or n_keep is None:
        return
    n_values = len(view.distinct(zc.balance_path(view, field)))
    if n_keep < n_values:
        prop.invalid = True
        prop.error_message = (
            f"'{field}' has {n_values:,} values but {n_keep:,} samples are kept: keep at least "
            "one per value, or balance by a field with fewer values"
        )


def _method_kwargs(ctx, params):
    """select_coreset keyword arguments of the method part of the form (defaults applied)."""
    method = params.get("method") or DEFAULT_METHOD
    dedup = params.get("dedup_threshold")
    balance_by = params.get("balance_by") or None
    include = params.get("include_tag") or None
    ranked = bool(params.get("ranked", False))
    rank_field = (params.get("rank_field") or None) if ranked else None
    grow = {}
    if params.get("include_view"):
        if include is not None:
            raise ValueError("pass include_tag or include_view, not both")
        include = ctx.dataset.load_saved_view(params["include_view"])
    if include is not None:
        grow["include"] = include
    if ranked:
        grow["ranked"] = True
    if rank_field is not None:
        grow["rank_field"] = rank_field
    if method == "topk" and dedup is None and balance_by is None and not grow:
        return {"method": "topk"}
    kw = {"method": method, "overwrite": bool(params.get("overwrite", False))}
    if method == DEFAULT_METHOD:  # select_coreset's default: finds the recorded embeddings itself
        kw["method"] = None
    for name, default in get_spec(method).defaults().items():
        value = params.get(name, default)
        if value is not None and value != "":
            kw[name] = value
    for name in ("embeddings", "seed", "run_key", "dedup_threshold"):
        if params.get(name) is not None and params.get(name) != "":
            kw[name] = params[name]
    if balance_by is not None:
        kw.update(balance_by=balance_by, balance=params.get("balance") or "proportional")
    kw.update(grow)
    if method == "target":
        name = params.get("target_view")
        if not name:
            raise ValueError("method 'target' needs target_view: the name of a saved view")
        kw["target"] = ctx.dataset.load_saved_view(name)
    return kw


def _size_kwargs(params, form_defaults=None):
    """``{mode: value}`` of the size part of the form. The form always sends its mode and value;
    a programmatic call must give one of them (no silent default). ``form_defaults`` (the form's
    preview while it is being filled) fills a value not given yet."""
    params = {**(form_defaults or {}), **{k: v for k, v in params.items() if v is not None}}
    mode = params.get("size_mode")
    given = [m for m in _SIZE_MODES if params.get(m) is not None]
    if mode is None:
        if len(given) != 1:
            raise ValueError(
                "pass exactly one of size, fraction or threshold"
                + (f" (got {', '.join(given)})" if given else "")
            )
        mode = given[0]
    if mode not in _SIZE_MODES:
        raise ValueError(f"size_mode must be one of {list(_SIZE_MODES)}; got {mode!r}")
    if params.get(mode) is None:
        raise ValueError(f"size_mode is {mode!r} but no {mode} was given")
    return {mode: params[mode]}


def register(p):
    p.register(ComputeZcore)
    p.register(SelectCoreset)
    p.register(EvaluateCoreset)
    p.register(CoresetPanel)
