"""The Coreset panel: see and steer a ZCore selection in the FiftyOne App.

The panel's logic lives in plain functions (``score_fields``, ``coreset_summary``, ``histogram``,
``class_distribution``, ``overlap``, ``runs_table``) that take a collection and return plain data,
so they are tested without the App; :class:`CoresetPanel` only lays them out and wires events.
The kept set is always :func:`zcore.collection.select_coreset`'s with ``method="topk"``: the panel
cuts the score histogram, so the count it shows is the count that a top-score selection keeps.
The default selection method (``"auto"``, which is not a score cut) runs from the panel's
"Run select_coreset…" button, whose form opens on it.
"""

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types
import numpy as np

from . import collection as zc

MODES = ("fraction", "size", "threshold")
MODE_LABELS = {"fraction": "Fraction", "size": "Count", "threshold": "Score threshold"}
SELECT_URI = "@zcore/zcore/select_coreset"
COMPUTE_URI = "@zcore/zcore/compute_zcore"
HIST_BINS = 40
PLOT_WIDTH = 560  # px: fits a panel that shares the screen with the grid
_PLOT_CONFIG = {"displayModeBar": False, "responsive": True}
KEPT_COLOR = "#ff6d04"
ALL_COLOR = "#8d99ae"


# --- logic (no App needed) ---------------------------------------------------------------------


def score_fields(view):
    """Float fields that can rank the collection: top-level float fields, plus float attributes of
    the patches on a patches view (``detections.zcore_score``)."""
    schema = view.get_field_schema(flat=True)
    prefix = view.patches_field + "." if getattr(view, "_is_patches", False) else None
    out = []
    for name, field in schema.items():
        if not isinstance(field, fo.FloatField) or name.split(".")[-1].startswith("_"):
            continue
        if "." not in name or (prefix and name.startswith(prefix) and name.count(".") == 1):
            out.append(name)
    return sorted(out)


def default_score_field(fields):
    for f in fields:
        if f.split(".")[-1] == zc.DEFAULT_SCORE_FIELD:
            return f
    return fields[0] if fields else None


def label_fields(view):
    """Top-level ``Classification`` fields (class distributions are drawn for them)."""
    schema = view.get_field_schema(flat=False)
    return sorted(
        name
        for name, field in schema.items()
        if isinstance(field, fo.EmbeddedDocumentField)
        and issubclass(field.document_type, fo.Classification)
    )


def size_kwargs(mode, value):
    """``select_coreset`` keyword for a control value: ``{"fraction": 0.1}`` etc."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if mode == "size":
        return {"size": int(value)}
    return {mode: float(value)}


def scores_of(view, field):
    values = view.values(field)
    return np.array([v for v in values if v is not None], dtype=np.float64)


def coreset_summary(view, field, mode, value):
    """What the control selects: ``{"kept": view, "n_keep", "n_scored", "cut"}``.

    ``kept`` is :func:`zcore.collection.select_coreset`'s view, ``cut`` the lowest kept score
    (``None`` when nothing is kept).
    """
    kept = zc.select_coreset(view, score_field=field, method="topk", **size_kwargs(mode, value))
    kept_scores = scores_of(kept, field)
    return {
        "kept": kept,
        "n_keep": len(kept_scores),
        "n_scored": int(view.exists(field).count()),
        "cut": float(kept_scores.min()) if len(kept_scores) else None,
    }


def histogram(view, field, kept=None, bins=HIST_BINS, cut=None):
    """Plotly ``(data, layout)``: the score histogram of ``view``, the kept samples' histogram
    over the same bins, and a vertical line at ``cut``."""
    scores = scores_of(view, field)
    lo, hi = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
    if not hi > lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    counts, _ = np.histogram(scores, bins=edges)
    centers = ((edges[:-1] + edges[1:]) / 2).tolist()
    width = float(edges[1] - edges[0])
    data = [
        {
            "type": "bar",
            "name": "all",
            "x": centers,
            "y": counts.tolist(),
            "width": width,
            "marker": {"color": ALL_COLOR},
        }
    ]
    if kept is not None:
        kept_counts, _ = np.histogram(scores_of(kept, field), bins=edges)
        data.append(
            {
                "type": "bar",
                "name": "kept",
                "x": centers,
                "y": kept_counts.tolist(),
                "width": width,
                "marker": {"color": KEPT_COLOR},
            }
        )
    layout = {
        "barmode": "overlay",
        "height": 260,
        "width": PLOT_WIDTH,
        "margin": {"l": 40, "r": 10, "t": 30, "b": 40},
        "title": {"text": f"{field} histogram", "font": {"size": 13}},
        "xaxis": {"title": {"text": field}},
        "yaxis": {"title": {"text": "samples"}},
        "showlegend": True,
        "legend": {"orientation": "h", "x": 0, "y": 1.15},
        "shapes": [],
    }
    if cut is not None:
        layout["shapes"].append(
            {
                "type": "line",
                "x0": cut,
                "x1": cut,
                "yref": "paper",
                "y0": 0,
                "y1": 1,
                "line": {"color": KEPT_COLOR, "width": 2, "dash": "dash"},
            }
        )
    return data, layout


def class_distribution(view, kept, label_field):
    """``{"classes", "all", "kept"}``: counts per class of ``label_field`` in the full and kept
    sets (classes sorted by full count, descending; ``None`` labels are left out)."""
    path = f"{label_field}.label"
    full = {k: v for k, v in view.count_values(path).items() if k is not None}
    sub = {k: v for k, v in kept.count_values(path).items() if k is not None}
    classes = sorted(full, key=lambda c: (-full[c], str(c)))
    return {
        "classes": classes,
        "all": [full[c] for c in classes],
        "kept": [sub.get(c, 0) for c in classes],
    }


def distribution_plot(dist, title):
    """Plotly ``(data, layout)``: class shares (%) in the full and the kept set, side by side."""
    n_all, n_kept = max(sum(dist["all"]), 1), max(sum(dist["kept"]), 1)
    data = [
        {
            "type": "bar",
            "name": f"all ({sum(dist['all'])})",
            "x": dist["classes"],
            "y": [100 * c / n_all for c in dist["all"]],
            "marker": {"color": ALL_COLOR},
        },
        {
            "type": "bar",
            "name": f"kept ({sum(dist['kept'])})",
            "x": dist["classes"],
            "y": [100 * c / n_kept for c in dist["kept"]],
            "marker": {"color": KEPT_COLOR},
        },
    ]
    layout = {
        "barmode": "group",
        "height": 260,
        "width": PLOT_WIDTH,
        "margin": {"l": 40, "r": 10, "t": 30, "b": 60},
        "title": {"text": title, "font": {"size": 13}},
        "yaxis": {"title": {"text": "% of set"}},
        "legend": {"orientation": "h", "x": 0, "y": 1.15},
    }
    return data, layout


def overlap(view, field_a, field_b, mode, value):
    """Agreement of two score fields at the same size: ``{"n_a", "n_b", "n_both", "jaccard"}``."""
    kwargs = size_kwargs(mode, value)
    a = set(zc.select_coreset(view, score_field=field_a, method="topk", **kwargs).values("id"))
    b = set(zc.select_coreset(view, score_field=field_b, method="topk", **kwargs).values("id"))
    union = len(a | b)
    return {
        "n_a": len(a),
        "n_b": len(b),
        "n_both": len(a & b),
        "jaccard": len(a & b) / union if union else 1.0,
    }


_RUN_COLUMNS = (
    "score_field",
    "embeddings",
    "seed",
    "n_samples",
    "sample_dim",
    "redund_nn",
    "redund_exp",
    "rand_init",
    "level",
    "component_fields",
)


def runs_table(view):
    """One row (dict) per recorded ``compute_zcore`` run: key, parameters, seed, timestamp."""
    rows = []
    for key in zc.list_zcore_runs(view):
        info = view.get_run_info(key)
        cfg = info.config
        row = {"key": key, "timestamp": str(info.timestamp)[:19] if info.timestamp else ""}
        for col in _RUN_COLUMNS:
            v = getattr(cfg, col, None)
            row[col] = ", ".join(v) if isinstance(v, list) else ("" if v is None else str(v))
        rows.append(row)
    return rows


def cluster_distribution(view, kept, embeddings_field, k=8):
    """For unlabelled data: k-means clusters (k <= 8, fixed seed) of ``embeddings_field``,
    ``{"classes", "all", "kept"}`` as :func:`class_distribution` (samples without embeddings are
    left out)."""
    from sklearn.cluster import KMeans

    ids = view.values("id")
    vecs = view.values(embeddings_field)
    have = [i for i, v in enumerate(vecs) if v is not None]
    if len(have) < 2:
        return None
    X = np.asarray([np.ravel(vecs[i]) for i in have], dtype=np.float64)
    k = min(k, len(have))
    labels = KMeans(n_clusters=k, n_init=3, random_state=0).fit_predict(X)
    by_id = {ids[i]: int(c) for i, c in zip(have, labels)}
    kept_labels = [by_id[i] for i in kept.values("id") if i in by_id]
    full = np.bincount(labels, minlength=k)
    sub = np.bincount(np.asarray(kept_labels, dtype=np.int64), minlength=k)
    order = np.argsort(-full, kind="stable")
    return {
        "classes": [f"cluster {c}" for c in order],
        "all": [int(full[c]) for c in order],
        "kept": [int(sub[c]) for c in order],
    }


def run_embeddings_field(view, score_field):
    """The embeddings field that the latest run writing ``score_field`` used, if one exists."""
    fields = zc.recorded_embeddings(view, score_field.split(".")[-1])
    return fields if isinstance(fields, str) else None


# --- the panel -----------------------------------------------------------------------------------


def selection_base(view):
    """``view`` without the stages that :func:`zcore.collection.select_coreset` appends (exists,
    an optional threshold match, sort by score then id, limit), if it ends with them; else
    ``view``. The panel steers a selection on the view it was selected from."""
    import fiftyone.core.stages as fos

    stages = list(view._stages)
    if len(stages) < 3:
        return view
    limit, sort = stages[-1], stages[-2]
    if not isinstance(limit, fos.Limit) or not isinstance(sort, fos.SortBy):
        return view
    order = sort.field_or_expr
    if not isinstance(order, (list, tuple)) or len(order) != 2:
        return view
    (field, direction), (tie, tie_dir) = (tuple(o) for o in order)
    if (direction, tie, tie_dir) != (-1, "_id", 1):
        return view
    k = len(stages) - 2
    if k >= 1 and isinstance(stages[k - 1], fos.Match):
        k -= 1
    if k < 1 or not isinstance(stages[k - 1], fos.Exists) or stages[k - 1].field != field:
        return view
    from fiftyone.core.view import DatasetView

    return DatasetView._build(view._root_dataset, view._serialize()[: k - 1])


def _slider(lo, hi, step):
    return {"min": lo, "max": hi, "step": step, "valueLabelDisplay": "auto"}


class CoresetPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name="coreset_panel",
            label="ZCore: coreset",
            icon="/assets/coreset.svg",
            surfaces="grid",
            help_markdown=(
                "Pick a score field, move the control to choose how many samples to keep, see "
                "where the cut falls and what the kept set looks like; then show, save or tag it."
            ),
        )

    # Panel state (kept by the App, sent with every event): score_field, mode, fraction, size,
    # threshold, label_field, compare_field, save_row.view_name, save_row.tag, last_action. The
    # App writes an input's value to the state before calling its on_change, so the handlers
    # below only ask for a re-render. Inputs get defaults that depend only on the view and the
    # score field: the App re-applies a default that changes, over the user's value.

    def on_load(self, ctx):
        pass

    def on_change_view(self, ctx):
        pass  # re-render for the new view (see _view)

    def on_change_dataset(self, ctx):
        pass  # re-render

    def on_change(self, ctx):
        pass  # any control: re-render with the new state

    def _text(self, ctx, key, default):
        # the inputs sit in the "save_row" stack, so the App keeps their values under it
        state = ctx.panel.state
        return state.get(f"save_row.{key}") or state.get(key) or default

    # --- what the panel works on

    def _view(self, ctx):
        """The collection the panel works on: the App's current view, or, when that view is a
        kept set (``select_coreset``'s stages at its end, e.g. after "Show kept set"), the view
        it was selected from."""
        return selection_base(ctx.view)

    def _controls(self, ctx, view):
        state = ctx.panel.state
        fields = score_fields(view)
        field = state.get("score_field")
        if field not in fields:
            field = default_score_field(fields)
        mode = state.get("mode") if state.get("mode") in MODES else "fraction"
        n = int(view.exists(field).count()) if field else 0
        value = state.get(mode)
        if mode == "size":
            default = max(1, n // 10)
            value = default if value is None else int(min(max(int(value), 0), n))
        elif mode == "threshold":
            s = scores_of(view, field)
            lo, hi = (float(s.min()), float(s.max())) if len(s) else (0.0, 1.0)
            default = float(np.quantile(s, 0.9)) if len(s) else 0.5
            # a threshold left from another score field may be out of this one's range
            value = default if value is None or not lo <= float(value) <= hi else float(value)
        else:
            default = 0.1
            value = default if value is None else float(min(max(float(value), 0.0), 1.0))
        return fields, field, mode, value, n, default

    def _selection(self, ctx):
        view = self._view(ctx)
        _, field, mode, value, _, _ = self._controls(ctx, view)
        kept = zc.select_coreset(view, score_field=field, method="topk", **size_kwargs(mode, value))
        return view, field, kept

    # --- buttons

    def show_kept(self, ctx):
        _, _, kept = self._selection(ctx)
        ctx.ops.set_view(view=kept)

    def show_all(self, ctx):
        ctx.ops.set_view(view=self._view(ctx))

    def save_view(self, ctx):
        view, _, kept = self._selection(ctx)
        name = self._text(ctx, "view_name", "zcore_coreset")
        try:
            count = zc.save_coreset(view, kept, view_name=name, overwrite=True)
        except ValueError as e:
            ctx.ops.notify(str(e), variant="error")
            return
        ctx.panel.state.set("last_action", f"Saved view '{name}' ({count:,} samples)")
        ctx.ops.notify(f"Saved view '{name}' ({count:,} samples)", variant="success")

    def tag_kept(self, ctx):
        view, _, kept = self._selection(ctx)
        tag = self._text(ctx, "tag", "coreset")
        count = zc.save_coreset(view, kept, tag=tag)
        ctx.panel.state.set("last_action", f"Tagged {count:,} samples '{tag}'")
        ctx.ops.notify(f"Tagged {count:,} samples '{tag}'", variant="success")
        ctx.ops.reload_samples()

    def run_select(self, ctx):
        view = self._view(ctx)
        _, field, mode, value, _, _ = self._controls(ctx, view)
        params = {"score_field": field, "size_mode": mode, **size_kwargs(mode, value)}
        ctx.prompt(SELECT_URI, params=params)

    def run_compute(self, ctx):
        ctx.prompt(COMPUTE_URI)

    # --- layout

    def render(self, ctx):
        panel = types.Object()
        view = self._view(ctx)
        fields, field, mode, value, n, default = self._controls(ctx, view)
        if not fields:
            panel.md(
                "### No score field yet\nRun **ZCore: compute coreset scores** first (or add any "
                "float field, e.g. `uniqueness`).",
                name="empty",
            )
            panel.btn("compute", label="Compute ZCore scores", on_click=self.run_compute)
            return types.Property(panel, view=types.GridView(orientation="vertical"))

        choices = types.DropdownView()
        for f in fields:
            choices.add_choice(f, label=f)
        panel.enum(
            "score_field",
            fields,
            default=default_score_field(fields),
            label="Score field",
            view=choices,
            on_change=self.on_change,
        )
        modes = types.RadioGroup(orientation="horizontal")
        for m in MODES:
            modes.add_choice(m, label=MODE_LABELS[m])
        panel.enum(
            "mode", MODES, default="fraction", label="Keep by", view=modes, on_change=self.on_change
        )
        if mode == "size":
            panel.int(
                "size",
                label="Count",
                default=default,
                min=0,
                max=n,
                view=types.SliderView(componentsProps={"slider": _slider(0, n, 1)}),
                on_change=self.on_change,
            )
        elif mode == "threshold":
            s = scores_of(view, field)
            lo, hi = (float(s.min()), float(s.max())) if len(s) else (0.0, 1.0)
            step = (hi - lo) / 200 if hi > lo else 0.01
            panel.float(
                "threshold",
                label="Keep scores >=",
                default=default,
                view=types.SliderView(componentsProps={"slider": _slider(lo, hi, step)}),
                on_change=self.on_change,
            )
        else:
            panel.float(
                "fraction",
                label="Fraction",
                default=default,
                min=0.0,
                max=1.0,
                view=types.SliderView(componentsProps={"slider": _slider(0.0, 1.0, 0.01)}),
                on_change=self.on_change,
            )

        try:
            summary = coreset_summary(view, field, mode, value)
        except ValueError as e:
            panel.view("error", types.Error(label=str(e)))
            return types.Property(panel, view=types.GridView(orientation="vertical"))
        kept = summary["kept"]
        cut = "" if summary["cut"] is None else f" &nbsp; cut at {field} >= {summary['cut']:.4f}"
        panel.md(
            f"**Kept: {summary['n_keep']:,} of {summary['n_scored']:,}** scored samples{cut}",
            name="summary",
        )

        plots = panel.v_stack("plots", gap=1)
        data, layout = histogram(view, field, kept=kept, cut=summary["cut"])
        plots.plot("histogram", data=data, layout=layout, config=_PLOT_CONFIG)
        dist_title, dist = None, None
        labels = label_fields(view)
        if labels:
            label_field = ctx.panel.state.get("label_field")
            label_field = label_field if label_field in labels else labels[0]
            dist = class_distribution(view, kept, label_field)
            dist_title = f"{label_field}: class shares"
        else:
            emb = run_embeddings_field(view, field)
            if emb is not None:
                dist = cluster_distribution(view, kept, emb)
                dist_title = f"k-means clusters of {emb} (no labels)"
        if dist is not None:
            data, layout = distribution_plot(dist, dist_title)
            plots.plot("classes", data=data, layout=layout, config=_PLOT_CONFIG)
        if len(labels) > 1:
            lv = types.DropdownView()
            for f in labels:
                lv.add_choice(f, label=f)
            panel.enum(
                "label_field",
                labels,
                default=labels[0],
                label="Class field",
                view=lv,
                on_change=self.on_change,
            )

        actions = panel.h_stack("actions", align_x="left", gap=1)
        actions.btn(
            "show_kept", label="Show kept set", on_click=self.show_kept, variant="contained"
        )
        actions.btn("show_all", label="Show all", on_click=self.show_all, variant="outlined")
        actions.btn(
            "run_select",
            label="Run select_coreset…",
            on_click=self.run_select,
            variant="outlined",
        )
        names = panel.h_stack("save_row", align_x="left", gap=1)
        names.str(
            "view_name",
            label="View name",
            default="zcore_coreset",
        )
        names.btn("save_view", label="Save as view", on_click=self.save_view, variant="outlined")
        names.str(
            "tag",
            label="Tag",
            default="coreset",
        )
        names.btn("tag_kept", label="Tag kept samples", on_click=self.tag_kept, variant="outlined")
        if ctx.panel.state.get("last_action"):
            panel.md(ctx.panel.state.get("last_action"), name="last_action_md")

        others = [f for f in fields if f != field]
        if others:
            cv = types.DropdownView()
            for f in others:
                cv.add_choice(f, label=f)
            other = ctx.panel.state.get("compare_field")
            panel.enum(
                "compare_field",
                others,
                label="Compare with",
                description="Overlap of the two kept sets at the chosen size",
                view=cv,
                on_change=self.on_change,
            )
            if other in others:
                o = overlap(view, field, other, mode, value)
                panel.md(
                    f"**Overlap: {o['n_both']:,}** samples kept by both ({field}: "
                    f"{o['n_a']:,}, {other}: {o['n_b']:,}; Jaccard {o['jaccard']:.2f})",
                    name="overlap_md",
                )

        rows = runs_table(view)
        if rows:
            lines = ["| run | embeddings | seed | points | neighbours |", "|---|---|---|---|---|"]
            for r in rows:
                lines.append(
                    f"| {r['key']} | {r['embeddings']} | {r['seed']} | {r['n_samples']} | "
                    f"{r['redund_nn']} |"
                )
            panel.md("**ZCore runs**\n\n" + "\n".join(lines), name="runs_md")
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=2))
