"""The Coreset panel: see and steer a ZCore selection in the FiftyOne App.

The panel's logic lives in plain functions (``score_fields``, ``coreset_summary``, ``histogram``,
``class_distribution``, ``overlap``, ``runs_table``) that take a collection and return plain data,
so they are tested without the App; :class:`CoresetPanel` only lays them out and wires events.
The kept set is always :func:`zcore.collection.select_coreset`'s with ``method="topk"``: the panel
cuts the score histogram, so the count it shows is the count that a top-score selection keeps;
balanced over a field's values (``balance_by``, with the seed :data:`PANEL_SEED`) or grown from
tagged samples (``include``), through the same core functions ``select_coreset`` calls.
The default selection method (``"auto"``, which is not a score cut) runs from the panel's
"Run select_coreset…" button, whose form opens on it.

Each event reads what it shows (a score field, a label field, the k-means clusters of an
embeddings field, the runs) at most once, as arrays, and derives counts, histogram, cut and kept
ids from them. The arrays are kept across events in a small module-level cache (:data:`CACHE`,
least recently used, bounded in entries and bytes), keyed by the view (dataset, stages) and valid
while a cheap change stamp of its dataset stays the same (:func:`_stamp`): moving the slider reads
no samples again; re-scoring, tagging, adding or deleting samples or fields reads them anew.
"""

import hashlib
import json
import threading
from collections import OrderedDict, namedtuple

import fiftyone as fo
import fiftyone.core.view as fov
import fiftyone.operators as foo
import fiftyone.operators.types as types
import numpy as np

from . import collection as zc
from . import evaluation as zev
from .core import methods as M
from .core.budget import resolve_size, select_top_indices
from .forms import BALANCE_BY_HELP, BALANCE_LABELS, NONE, balance_radio, dropdown

MODES = ("fraction", "size", "threshold")
MODE_LABELS = {"fraction": "Fraction", "size": "Count", "threshold": "Score threshold"}
SELECT_URI = "@zcore/zcore/select_coreset"
COMPUTE_URI = "@zcore/zcore/compute_zcore"
EVALUATE_URI = "@zcore/zcore/evaluate_coreset"
HIST_BINS = 40
#: The histogram and the threshold slider span these quantiles of the scores (ZCore scores are
#: min-max normalised, so min-max is always 0-1 while most scores sit in a narrow band); scores
#: outside them are counted in the end bins.
HIST_QUANTILES = (0.005, 0.995)
THRESHOLD_DEFAULT_QUANTILE = 0.9  # the default threshold keeps the top 10%
PLOT_HEIGHT = 260
_PLOT_CONFIG = {"displayModeBar": False}
#: A button or box beside a labelled text input: moved down by the label's height, so that it
#: sits level with the input box (the stacks' align_y does not reach FiftyOne's inner boxes).
_BESIDE_INPUT = {"container": {"sx": {"pt": "30px"}}}
PLOT_WIDTH = 560  # px: fits a panel that shares the screen with the grid
#: The figure's box is exactly the figure (the panel's grid sizes its items by their content, so
#: a figure that fills "100%" of it is drawn at plotly's default 700 px, wider than the panel).
_PLOT_PROPS = {
    "container": {"sx": {"width": f"{PLOT_WIDTH}px", "maxWidth": "100%"}},
    "plotly": {"style": {"width": f"{PLOT_WIDTH}px", "height": f"{PLOT_HEIGHT}px"}},
}
#: A Material icon name: the App draws a Python panel's icon in the "+" menu only for a name (a
#: path such as /assets/coreset.svg is dropped there, see docs/app.md).
PANEL_ICON = "filter_alt"
DEFAULT_VIEW_NAME = "zcore_coreset"
DEFAULT_RANK_FIELD = "zcore_rank"
#: The seed of the panel's balanced selections (which value gets the remainder of the quotas):
#: one fixed seed, so that what it saves, tags or ranks is the kept set it shows.
PANEL_SEED = 0
#: The run that records the panel's balanced or grown selections when it saves, tags or ranks
#: them (replaced by the next one; a plain top-score cut records nothing, as in Python).
PANEL_RUN_KEY = "coreset_panel"
ZCORE_OPERATORS = ("@zcore/zcore/",)  # delegated operations of this plugin (URI prefix)
PENDING_STATES = ("scheduled", "queued", "running")
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


# --- reading once: arrays per view, cached across events --------------------------------------

CACHE_ENTRIES = 12  # values kept across events; one view with a compare field uses five
CACHE_BYTES = 256 * 2**20  # and at most about this many bytes (the newest entry is always kept)


class _Cache:
    """Least recently used values keyed by ``(view identity, what)``, each valid for the change
    stamp it was read under: under another stamp it is read again and replaced."""

    def __init__(self, entries=CACHE_ENTRIES, max_bytes=CACHE_BYTES):
        self.entries, self.max_bytes = entries, max_bytes
        self._items = OrderedDict()  # key -> (stamp, value, nbytes)
        self._lock = threading.Lock()

    def get(self, key, stamp, read):
        with self._lock:
            item = self._items.get(key)
            if item is not None and item[0] == stamp:
                self._items.move_to_end(key)
                return item[1]
        value = read()
        with self._lock:
            self._items[key] = (stamp, value, _nbytes(value))
            self._items.move_to_end(key)
            total = sum(item[2] for item in self._items.values())
            while len(self._items) > 1 and (
                len(self._items) > self.entries or total > self.max_bytes
            ):
                total -= self._items.popitem(last=False)[1][2]
        return value

    def clear(self):
        with self._lock:
            self._items.clear()

    def __len__(self):
        return len(self._items)


#: The panel's arrays, shared by every event of this process (panels are created per event).
CACHE = _Cache()


def _nbytes(value):
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        return 64 + sum(_nbytes(v) for v in value)
    return 64


def _identity(view):
    """What ``view`` is, apart from its data: dataset ids, group slice, a digest of its stages."""
    stages = view._serialize(include_uuids=False) if isinstance(view, fov.DatasetView) else []
    digest = hashlib.sha1(json.dumps(stages, sort_keys=True, default=str).encode()).hexdigest()
    root, ds = view._root_dataset, view._dataset
    return str(root._doc.id), str(ds._doc.id), getattr(view, "group_slice", None), digest


def _stamp(view):
    """A cheap change stamp of the data behind ``view``: the dataset document's
    ``last_modified_at`` and ``last_deletion_at`` (schema, runs, deleted samples), and per sample
    (and frame) collection the newest ``last_modified_at`` (one indexed look-up: FiftyOne, and
    zcore's own writer, set it on every sample added, edited, tagged or re-scored) and the number
    of documents (collection metadata)."""
    out = []
    for ds in {id(d): d for d in (view._root_dataset, view._dataset)}.values():
        out.append((ds._doc.last_modified_at, getattr(ds._doc, "last_deletion_at", None)))
        colls = [ds._sample_collection]
        if ds._frame_collection_name is not None:
            colls.append(ds._frame_collection)
        for coll in colls:
            newest = coll.find_one({}, {"last_modified_at": 1}, sort=[("last_modified_at", -1)])
            out.append(((newest or {}).get("last_modified_at"), coll.estimated_document_count()))
    return tuple(out)


#: One value per sample of a view, sorted by sample id (the order in which ``select_coreset``
#: breaks score ties): ``ids`` (ObjectId hex, bytes), ``values`` and, for labels the class names
#: of the codes in ``values``, for clusters the number of clusters.
_Column = namedtuple("_Column", "ids values names", defaults=(None,))


def _by_id(ids, values, names=None):
    ids = np.array(ids, dtype="S24")  # ObjectId hex: its byte order is the ObjectId order
    order = np.argsort(ids, kind="stable")
    col = _Column(ids[order], np.asarray(values)[order], names)
    col.ids.setflags(write=False)
    col.values.setflags(write=False)
    return col


def _read_scores(view, path):
    ids, values = view.values(["id", path])  # one pass over the samples
    return _by_id(ids, np.array([np.nan if v is None else v for v in values], dtype=np.float64))


def _read_labels(view, label_field):
    ids, labels = view.values(["id", f"{label_field}.label"])
    names = sorted({v for v in labels if v is not None}, key=str)
    code = {c: i for i, c in enumerate(names)}
    codes = np.array([-1 if v is None else code[v] for v in labels], dtype=np.int64)
    return _by_id(ids, codes, names)


def _read_groups(view, path):
    """The value of ``path`` of every sample as a group code (``-1``: none), the values sorted
    as :func:`zcore.collection.group_codes` sorts them for ``select_coreset(balance_by=...)``."""
    ids, values = view.values(["id", path])
    codes, names = zc.group_codes(values)
    return _by_id(ids, codes, names)


def _read_tagged(view, tag):
    """The ids (ObjectId hex, bytes) of the samples tagged ``tag``, in id order."""
    return np.sort(np.array(view.match_tags(tag).values("id"), dtype="S24"))


def _read_clusters(view, embeddings_field, k):
    """k-means clusters (fixed seed) of the embeddings, -1 where a sample has none; ``None`` when
    fewer than two samples have one."""
    from sklearn.cluster import KMeans

    ids, vecs = view.values(["id", embeddings_field])
    have = [i for i, v in enumerate(vecs) if v is not None]
    if len(have) < 2:
        return None
    X = np.asarray([np.ravel(vecs[i]) for i in have], dtype=np.float64)
    k = min(k, len(have))
    codes = np.full(len(ids), -1, dtype=np.int64)
    codes[have] = KMeans(n_clusters=k, n_init=3, random_state=0).fit_predict(X)
    return _by_id(ids, codes, k)


def _at(col, ids):
    """``col``'s values of the samples ``ids`` (those not in ``col`` are left out)."""
    ids = np.asarray(ids, dtype="S24")
    if not len(col.ids) or not len(ids):
        return col.values[:0]
    pos = np.minimum(np.searchsorted(col.ids, ids), len(col.ids) - 1)
    return col.values[pos[col.ids[pos] == ids]]


#: What the control keeps: kept ``ids`` and ``scores`` (best first), ``n_scored``, ``cut`` (the
#: lowest kept score of the samples chosen by score; ``None`` when balanced: a cut per value),
#: ``n_included`` (the kept samples that were included, first) and ``per_value`` (balanced:
#: ``{value: kept count}``).
_Selection = namedtuple(
    "_Selection", "ids scores n_scored cut n_included per_value", defaults=(0, None)
)


def _select(col, mode, value, groups=None, quota="proportional", include=None):
    """``select_coreset(method="topk", ...)``'s kept set, from a score column in id order (ties
    go to the lower index, the lower id): the top scores; balanced over the group codes of
    ``groups`` (a column of the same samples) with quotas ``quota`` and the seed
    :data:`PANEL_SEED`; or grown from the samples ``include`` (ids, a tag's samples). Each is
    the core function ``select_coreset`` calls (``select_balanced`` / ``select``)."""
    n_scored = int(np.count_nonzero(~np.isnan(col.values)))
    kwargs = size_kwargs(mode, value)
    if groups is None and include is None:
        idx = select_top_indices(col.values, **kwargs)
        kept = col.values[idx]
        return _Selection(col.ids[idx], kept, n_scored, float(kept.min()) if len(kept) else None)
    if "threshold" in kwargs:
        raise ValueError(
            "a score threshold keeps every sample above it: pick Fraction or Count to balance "
            "or to grow from tagged samples"
        )
    if groups is not None and include is not None:
        raise ValueError(
            "Growing from tagged samples does not combine with Balance by yet: clear one of them"
        )
    n_keep = resolve_size(col.values, **kwargs)
    if groups is not None:
        if not np.array_equal(groups.ids, col.ids):
            raise ValueError("the balance field and the scores cover different samples")
        idx = M.select_balanced(
            "topk", n_keep, groups.values, quota=quota, scores=col.values, seed=PANEL_SEED
        )
        kept = col.values[idx]
        counts = np.bincount(groups.values[idx], minlength=len(groups.names))
        per_value = {str(v): int(n) for v, n in zip(groups.names, counts)}
        return _Selection(col.ids[idx], kept, n_scored, None, 0, per_value)
    rows = np.searchsorted(col.ids, include)
    idx = M.select("topk", n_keep, scores=col.values, include=rows)
    kept = col.values[idx]
    chosen = kept[len(rows) :]
    chosen = chosen[~np.isnan(chosen)]
    cut = float(chosen.min()) if len(chosen) else None
    return _Selection(col.ids[idx], kept, n_scored, cut, len(rows))


class _Data:
    """The data of one view for one event: each array is read at most once, and reused across
    events (:data:`CACHE`) while the view's change stamp stays the same."""

    def __init__(self, view):
        self.view = view
        self._identity = _identity(view)
        self._stamp = _stamp(view)

    def _get(self, what, read):
        return CACHE.get((self._identity, what), self._stamp, read)

    def scores(self, field):
        path = zc.score_field_path(self.view, field)
        return self._get(("scores", path), lambda: _read_scores(self.view, path))

    def scored(self, field):
        """The scores that exist (any order)."""
        values = self.scores(field).values
        return values[~np.isnan(values)]

    def selection(self, field, mode, value, balance_by=None, balance="proportional", tag=None):
        """The kept set of the controls (:func:`_select`): balanced over ``balance_by``'s
        values, or grown from the samples tagged ``tag``."""
        groups = None if balance_by is None else self.groups(zc.balance_path(self.view, balance_by))
        include = None if tag is None else self.tagged(tag)
        return _select(self.scores(field), mode, value, groups, balance, include)

    def groups(self, path):
        return self._get(("groups", path), lambda: _read_groups(self.view, path))

    def tagged(self, tag):
        return self._get(("tagged", tag), lambda: _read_tagged(self.view, tag))

    def tags(self):
        """The sample tags of the view, sorted."""
        return self._get(("tags",), lambda: sorted(self.view.count_sample_tags()))

    def labels(self, label_field):
        return self._get(("labels", label_field), lambda: _read_labels(self.view, label_field))

    def clusters(self, embeddings_field, k=8):
        read = lambda: _read_clusters(self.view, embeddings_field, k)  # noqa: E731
        return self._get(("clusters", embeddings_field, k), read)

    def runs(self):
        return self._get(("runs",), lambda: _runs_rows(self.view))

    def embeddings_of(self, score_field):
        read = lambda: _recorded_embeddings(self.view, score_field)  # noqa: E731
        return self._get(("embeddings_of", score_field), read)

    def evaluations(self):
        """``{run key: Evaluation}`` of the coreset evaluations recorded on the dataset."""
        return self._get(("evaluations",), lambda: evaluations_of(self.view))


def evaluations_of(view):
    """``{run key: Evaluation}``: every coreset evaluation recorded on ``view``'s dataset
    (:func:`zcore.evaluation.evaluate_coreset`), oldest first."""
    return {key: zev.load_evaluation(view, key) for key in zev.list_evaluations(view)}


def scores_of(view, field):
    """The scores of ``field`` that exist in ``view`` (sorted by sample id)."""
    return _Data(view).scored(field)


def coreset_summary(view, field, mode, value, *, balance_by=None, balance="proportional", tag=None):
    """What the controls select: ``{"kept": view, "ids", "n_keep", "n_scored", "cut",
    "n_included", "per_value"}``.

    ``kept`` is the view the panel shows: :func:`zcore.collection.select_coreset`'s
    (``method="topk"``) for a plain cut, else a selection of the kept ``ids`` that the panel
    computed from its columns (balanced over ``balance_by`` with :data:`PANEL_SEED`, or grown
    from the samples tagged ``tag``; nothing recorded), which the tests compare with
    ``select_coreset``'s; ``cut`` the lowest kept score of the samples chosen by score
    (``None`` when nothing is, or when balanced).
    """
    data = _Data(view)
    kept = _select_coreset(data, field, mode, value, balance_by, balance, tag)
    sel = data.selection(field, mode, value, balance_by, balance, tag)
    return {
        "kept": kept,
        "ids": [i.decode() for i in sel.ids],
        "n_keep": len(sel.ids),
        "n_scored": sel.n_scored,
        "cut": sel.cut,
        "n_included": sel.n_included,
        "per_value": sel.per_value,
    }


def _options(balance_by, balance, tag):
    """``select_coreset`` keywords of the panel's balance and grow controls."""
    out = {}
    if balance_by is not None:
        out.update(balance_by=balance_by, balance=balance, seed=PANEL_SEED)
    if tag is not None:
        out["include"] = tag
    return out


def _select_coreset(
    data,
    field,
    mode,
    value,
    balance_by=None,
    balance="proportional",
    tag=None,
    *,
    record=False,
    rank_field=None,
):
    """:func:`zcore.collection.select_coreset` (``method="topk"``) of the panel's controls on
    ``data.view`` (a :class:`_Data`). A balanced, grown or ranked selection is recorded as
    :data:`PANEL_RUN_KEY` when ``record``, else its kept ids (from ``data``'s columns) are
    returned as a view (nothing written)."""
    view = data.view
    opts = _options(balance_by, balance, tag)
    if rank_field is not None:
        opts["rank_field"] = rank_field
    kwargs = dict(score_field=field, method="topk", **size_kwargs(mode, value), **opts)
    if not opts:
        return zc.select_coreset(view, **kwargs)
    if record:
        return zc.select_coreset(view, run_key=PANEL_RUN_KEY, overwrite=True, **kwargs)
    ids = [i.decode() for i in data.selection(field, mode, value, balance_by, balance, tag).ids]
    return view.select(ids, ordered=True)


def histogram(view, field, kept=None, bins=HIST_BINS, cut=None):
    """Plotly ``(data, layout)``: the score histogram of ``view``, the kept samples' histogram
    over the same bins, and a vertical line at ``cut``."""
    kept_scores = None if kept is None else scores_of(kept, field)
    return histogram_plot(scores_of(view, field), field, kept_scores, bins=bins, cut=cut)


def score_range(scores):
    """``(lo, hi)``: the span of the histogram and of the threshold slider, the
    :data:`HIST_QUANTILES` of ``scores`` (their min and max when those coincide)."""
    scores = np.asarray(scores, dtype=np.float64)
    if not len(scores):
        return 0.0, 1.0
    lo, hi = (float(q) for q in np.quantile(scores, HIST_QUANTILES))
    if not hi > lo:
        lo, hi = float(scores.min()), float(scores.max())
    if not hi > lo:
        lo, hi = lo - 0.5, lo + 0.5
    return lo, hi


def default_threshold(scores):
    """The threshold slider's default: the :data:`THRESHOLD_DEFAULT_QUANTILE` of the scores."""
    return float(np.quantile(scores, THRESHOLD_DEFAULT_QUANTILE)) if len(scores) else 0.5


def histogram_plot(scores, field, kept_scores=None, bins=HIST_BINS, cut=None):
    """:func:`histogram` from the score arrays: ``bins`` bins over :func:`score_range` (scores
    outside it are counted in the end bins), the x axis fixed to that range."""
    lo, hi = score_range(scores)
    edges = np.linspace(lo, hi, bins + 1)
    centers = ((edges[:-1] + edges[1:]) / 2).tolist()
    width = float(edges[1] - edges[0])
    traces = [("all", scores, ALL_COLOR)]
    if kept_scores is not None:
        traces.append(("kept", kept_scores, KEPT_COLOR))
    data = [
        {
            "type": "bar",
            "name": name,
            "x": centers,
            "y": np.histogram(np.clip(values, lo, hi), bins=edges)[0].tolist(),
            "width": width,
            "marker": {"color": color},
        }
        for name, values, color in traces
    ]
    layout = {
        "barmode": "overlay",
        "height": PLOT_HEIGHT,
        "width": PLOT_WIDTH,
        "margin": {"l": 45, "r": 15, "t": 50, "b": 45},
        "title": {"text": f"{field} histogram", "font": {"size": 13}, "x": 0, "xanchor": "left"},
        "xaxis": {
            "title": {"text": f"{field} (0.5-99.5% of the scores; the rest in the end bins)"},
            "range": [lo, hi],
        },
        "yaxis": {"title": {"text": "samples"}},
        "showlegend": True,
        "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
        "shapes": [],
    }
    if cut is not None:
        x = min(max(float(cut), lo), hi)  # a cut outside the range is drawn at its edge
        layout["shapes"].append(
            {
                "type": "line",
                "x0": x,
                "x1": x,
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
    return _class_shares(_Data(view).labels(label_field), kept.values("id"))


def _class_shares(labels, kept_ids):
    n = len(labels.names)
    full = np.bincount(labels.values[labels.values >= 0], minlength=n)
    kept = _at(labels, kept_ids)
    sub = np.bincount(kept[kept >= 0], minlength=n)
    order = sorted(range(n), key=lambda c: (-full[c], str(labels.names[c])))
    return {
        "classes": [labels.names[c] for c in order],
        "all": [int(full[c]) for c in order],
        "kept": [int(sub[c]) for c in order],
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
        "height": PLOT_HEIGHT,
        "width": PLOT_WIDTH,
        "margin": {"l": 45, "r": 15, "t": 50, "b": 60},
        "title": {"text": title, "font": {"size": 13}, "x": 0, "xanchor": "left"},
        "yaxis": {"title": {"text": "% of set"}},
        "showlegend": True,
        "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
    }
    return data, layout


def overlap(view, field_a, field_b, mode, value):
    """Agreement of two score fields at the same size: ``{"n_a", "n_b", "n_both", "jaccard"}``."""
    data = _Data(view)
    a, b = (data.selection(f, mode, value).ids for f in (field_a, field_b))
    return _overlap(a, b)


def _overlap(a, b):
    both = len(np.intersect1d(a, b))
    union = len(a) + len(b) - both
    return {
        "n_a": len(a),
        "n_b": len(b),
        "n_both": both,
        "jaccard": both / union if union else 1.0,
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
    return [dict(r) for r in _Data(view).runs()]


def _runs_rows(view):
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
    clusters = _Data(view).clusters(embeddings_field, k)
    return None if clusters is None else _cluster_shares(clusters, kept.values("id"))


def _cluster_shares(clusters, kept_ids):
    k = clusters.names
    full = np.bincount(clusters.values[clusters.values >= 0], minlength=k)
    kept = _at(clusters, kept_ids)
    sub = np.bincount(kept[kept >= 0], minlength=k)
    order = np.argsort(-full, kind="stable")
    return {
        "classes": [f"cluster {c}" for c in order],
        "all": [int(full[c]) for c in order],
        "kept": [int(sub[c]) for c in order],
    }


def run_embeddings_field(view, score_field):
    """The embeddings field that the latest run writing ``score_field`` used, if one exists."""
    return _Data(view).embeddings_of(score_field)


def _recorded_embeddings(view, score_field):
    fields = zc.recorded_embeddings(view, score_field.split(".")[-1])
    return fields if isinstance(fields, str) else None


def free_view_name(dataset, base=DEFAULT_VIEW_NAME):
    """``base``, or ``base_2``, ``base_3``...: the first name that no saved view of ``dataset``
    has (by name or slug): the panel's default, so that saving never replaces a view unasked."""
    name, i = base, 1
    while True:
        try:
            zc.check_view_name(dataset, name)
            return name
        except ValueError:
            i += 1
            name = f"{base}_{i}"


def delegated_operations(dataset_name, limit=10):
    """The plugin's delegated (scheduled) operations on a dataset, newest first: one dict per
    operation with ``id``, ``operator`` (``compute_zcore``/``select_coreset``), ``state``
    (scheduled, queued, running, completed, failed), ``progress`` (0-1 or ``None``), ``label``
    (the worker's progress label), ``queued_at`` (``YYYY-MM-DD HH:MM:SS`` UTC), ``name`` (what it
    does, from its parameters: the score field, and the target size of a selection),
    ``score_field`` and ``error``. Read from FiftyOne's ``DelegatedOperationService`` (the App of
    the open-source FiftyOne has no list of its own)."""
    from fiftyone.operators.delegated import DelegatedOperationService

    ops = DelegatedOperationService().list_operations(dataset_name=dataset_name)
    rows = [_op_row(op) for op in ops if str(op.operator or "").startswith(ZCORE_OPERATORS)]
    rows.sort(key=lambda r: r["queued_at"], reverse=True)
    return rows[:limit]


def _op_row(op):
    params = {}
    if op.context is not None:
        params = dict(op.context.request_params.get("params") or {})
    operator = str(op.operator).rsplit("/", 1)[-1]
    field = params.get("score_field") or zc.DEFAULT_SCORE_FIELD
    name = f"{operator} → {field}" if operator == "compute_zcore" else f"{operator} on {field}"
    mode = params.get("size_mode")
    if operator == "select_coreset" and params.get(mode) is not None:
        name += f", {MODE_LABELS.get(mode, mode).lower()} {params[mode]}"
    status = op.status
    progress = getattr(status, "progress", None)
    when = op.queued_at or op.scheduled_at
    error = getattr(op.result, "error", None) if op.result is not None else None
    return {
        "id": str(op.id),
        "operator": operator,
        "state": str(op.run_state or ""),
        "progress": None if progress is None else float(progress),
        "label": getattr(status, "label", None) or "",
        "queued_at": when.strftime("%Y-%m-%d %H:%M:%S") if when else "",
        "name": name,
        "score_field": field,
        "error": str(error).strip().splitlines()[-1] if error else "",
    }


def pending_runs(ops):
    """Rows of the runs table for the ``compute_zcore`` operations not finished yet."""
    return [
        {"key": r["score_field"], "state": _state_text(r), "queued_at": r["queued_at"]}
        for r in ops
        if r["operator"] == "compute_zcore" and r["state"] in PENDING_STATES
    ]


def _state_text(r):
    out = r["state"]
    if r["progress"] is not None:
        out += f" {100 * r['progress']:.0f}%"
    if r["label"]:
        out += f" ({r['label']})"
    return out


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


def prompt_target(view, base):
    """Parameters that make an operator prompted from the panel target ``base`` (the panel's
    view) while the App shows ``view``: none when they are the same, ``view_target="DATASET"``
    when ``base`` is the whole dataset, ``"BASE_VIEW"`` when it is ``view``'s generated base (a
    patches/frames/clips view), else ``{"set_view": True}``: no target names it, so the App's
    view must be set to ``base`` first."""
    if base is view:
        return {}
    stages = base._serialize(include_uuids=False) if isinstance(base, fov.DatasetView) else []
    if not stages:
        return {"view_target": "DATASET"}
    if getattr(view, "_is_generated", False):
        if view._base_view._serialize(include_uuids=False) == stages:
            return {"view_target": "BASE_VIEW"}
    return {"set_view": True}


def _slider(lo, hi, step):
    return {"min": lo, "max": hi, "step": step, "valueLabelDisplay": "auto"}


class CoresetPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name="coreset_panel",
            label="ZCore: coreset",
            icon=PANEL_ICON,
            surfaces="grid",
            help_markdown=(
                "Pick a score field, move the control to choose how many samples to keep, see "
                "where the cut falls and what the kept set looks like; then show, save or tag it."
            ),
        )

    # Panel state (kept by the App, sent with every event): score_field, mode, fraction, size,
    # threshold, options_row.balance_by, balance, options_row.include_tag, label_field,
    # compare_field, save_row.view_name, save_row.overwrite, tag_row.tag, rank_row.rank_field,
    # last_action, save_error, shown. The
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

    def _text(self, ctx, key, default, stack="save_row"):
        # the inputs sit in the "save_row"/"tag_row" stacks, so the App keeps their values there
        state = ctx.panel.state
        return state.get(f"{stack}.{key}") or state.get(key) or default

    # --- what the panel works on

    def _view(self, ctx):
        """The collection the panel works on: the App's current view, or, when that view is a
        kept set (``select_coreset``'s stages at its end, e.g. after "Show kept set"), the view
        it was selected from; for a balanced or grown kept set shown by "Show kept set", the view
        the panel remembered (``shown``)."""
        shown = ctx.panel.state.get("shown") or {}
        if shown.get("kept") and shown["kept"] == _identity(ctx.view)[3]:
            from fiftyone.core.view import DatasetView

            return DatasetView._build(ctx.view._root_dataset, shown.get("base") or [])
        return selection_base(ctx.view)

    def _controls(self, ctx, data):
        state = ctx.panel.state
        fields = score_fields(data.view)
        field = state.get("score_field")
        if field not in fields:
            field = default_score_field(fields)
        mode = state.get("mode") if state.get("mode") in MODES else "fraction"
        s = data.scored(field) if field else np.zeros(0)
        n = len(s)
        lo, hi = score_range(s)  # the slider's span: where the scores are
        value = state.get(mode)
        if mode == "size":
            default = max(1, n // 10)
            value = default if value is None else int(min(max(int(value), 0), n))
        elif mode == "threshold":
            default = default_threshold(s)
            # a threshold left from another score field may be out of this one's range
            value = default if value is None or not lo <= float(value) <= hi else float(value)
        else:
            default = 0.1
            value = default if value is None else float(min(max(float(value), 0.0), 1.0))
        balancing = zc.balance_fields(data.view)
        balance_by = self._text(ctx, "balance_by", None, stack="options_row")
        balance_by = balance_by if balance_by in balancing else None
        balance = state.get("balance") if state.get("balance") in BALANCE_LABELS else "proportional"
        tags = data.tags()
        tag = self._text(ctx, "include_tag", None, stack="options_row")
        tag = tag if tag in tags else None
        if mode == "threshold":  # a threshold has no budget to balance or grow (see _select)
            balance_by, tag = None, None
        return _Controls(
            fields,
            field,
            mode,
            value,
            n,
            default,
            lo,
            hi,
            balance_by,
            balance,
            tag,
            balancing,
            tags,
        )

    def _selection(self, ctx, record=False, rank_field=None):
        """``(view, kept view, controls)``: the kept set of the controls, recorded as
        :data:`PANEL_RUN_KEY` when ``record`` and it is balanced, grown or ranked."""
        data = _Data(self._view(ctx))
        c = self._controls(ctx, data)
        kept = _select_coreset(data, *c.selection, record=record, rank_field=rank_field)
        return data.view, kept, c

    # --- buttons

    def show_kept(self, ctx):
        """Shows the kept set in the grid. A balanced or grown kept set is a selection of ids,
        which :func:`selection_base` cannot undo: the panel remembers which view it came from
        (``shown``), so that it keeps counting on that view while the grid shows it."""
        view, kept, _ = self._selection(ctx)
        if selection_base(kept) is kept:
            stages = view._serialize() if isinstance(view, fov.DatasetView) else []
            ctx.panel.state.set("shown", {"kept": _identity(kept)[3], "base": stages})
        ctx.ops.set_view(view=kept)

    def show_all(self, ctx):
        ctx.ops.set_view(view=self._view(ctx))

    def save_view(self, ctx):
        """Saves the kept set; an existing saved view of that name is replaced only when the
        "Overwrite" box is ticked (otherwise the panel says so and nothing is written)."""
        view = self._view(ctx)
        name = self._text(ctx, "view_name", free_view_name(view._root_dataset))
        overwrite = bool(ctx.panel.state.get("save_row.overwrite"))
        try:
            zc.check_view_name(view._root_dataset, name, overwrite=overwrite)
            view, kept, _ = self._selection(ctx, record=True)
            count = zc.save_coreset(view, kept, view_name=name, overwrite=overwrite)
        except ValueError as e:
            msg = f"Not saved: {e}"
            if "exists" in str(e):
                msg = (
                    f"Not saved: a saved view named '{name}' exists. Tick 'Overwrite' to replace "
                    "it, or type another name."
                )
            return self._refused(ctx, msg)
        self._done(ctx, f"Saved view '{name}' ({count:,} samples)")

    def tag_kept(self, ctx):
        tag = self._text(ctx, "tag", "coreset", stack="tag_row")
        try:
            view, kept, _ = self._selection(ctx, record=True)
            count = zc.save_coreset(view, kept, tag=tag)
        except ValueError as e:
            return self._refused(ctx, f"Not tagged: {e}")
        self._done(ctx, f"Tagged {count:,} samples '{tag}'")
        ctx.ops.reload_samples()

    def write_ranks(self, ctx):
        """Writes each kept sample's rank (1 = first: the included samples, then by score) to
        the rank field, ``None`` to the others, and records the selection
        (:data:`PANEL_RUN_KEY`); the grid can then sort by it and label in that order."""
        field = self._text(ctx, "rank_field", DEFAULT_RANK_FIELD, stack="rank_row")
        try:
            _, kept, _ = self._selection(ctx, record=True, rank_field=field)
        except ValueError as e:
            return self._refused(ctx, f"No ranks written: {e}")
        self._done(ctx, f"Wrote ranks 1-{kept.count():,} to '{field}'")
        ctx.ops.reload_dataset()

    def _refused(self, ctx, msg):
        ctx.panel.state.set("save_error", msg)
        ctx.ops.notify(msg, variant="error")

    def _done(self, ctx, msg):
        ctx.panel.state.set("save_error", None)
        ctx.panel.state.set("last_action", msg)
        ctx.ops.notify(msg, variant="success")

    def run_select(self, ctx):
        """Opens *select coreset* on the view the panel counts on (:func:`selection_base`), not
        on the App's view: while the grid shows a kept set, the form's target is set to the
        dataset (or the generated view's base) when that is the panel's view, else the App's
        view is set back to the panel's view first."""
        base = self._view(ctx)
        c = self._controls(ctx, _Data(base))
        params = {"score_field": c.field, "size_mode": c.mode, **size_kwargs(c.mode, c.value)}
        if c.balance_by is not None:
            params.update(balance_by=c.balance_by, balance=c.balance)
        if c.tag is not None:
            params["include_tag"] = c.tag
        params.update(prompt_target(ctx.view, base))
        if params.pop("set_view", False):
            ctx.ops.set_view(view=base)
        ctx.prompt(SELECT_URI, params=params)

    def refresh(self, ctx):
        """Reloads the App's dataset (a field that a finished run wrote then shows in the grid and
        the sidebar); the panel re-renders with the delegated operations read anew."""
        ctx.ops.reload_dataset()

    def run_compute(self, ctx):
        ctx.prompt(COMPUTE_URI)

    def run_evaluate(self, ctx):
        """Opens the *evaluate coreset* operator (delegated by default) on the panel's view."""
        ctx.prompt(EVALUATE_URI)

    # --- layout: one method per section, top to bottom

    def render(self, ctx):
        panel = types.Object()
        data = _Data(self._view(ctx))
        c = self._controls(ctx, data)
        if not c.fields:
            return self._render_empty(panel)
        self._render_controls(panel, c)
        try:
            sel = data.selection(*c.selection)
        except ValueError as e:
            panel.view("error", types.Error(label=str(e)))
            return _layout(panel)
        self._render_summary(panel, c, sel)
        plots = panel.v_stack("plots", gap=1)
        self._render_histogram(plots, data, c, sel)
        self._render_distribution(ctx, panel, plots, data, c, sel)
        self._render_actions(ctx, panel, c)
        self._render_compare(ctx, panel, data, c, sel)
        ops = _safe_operations(ctx)
        self._render_operations(panel, ops)
        self._render_runs(panel, data, ops)
        self._render_evaluations(ctx, panel, data)
        return _layout(panel, gap=2)

    def _render_empty(self, panel):
        panel.md(
            "### No score field yet\nRun **ZCore: compute coreset scores** first (or add any "
            "float field, e.g. `uniqueness`).",
            name="empty",
        )
        panel.btn("compute", label="Compute ZCore scores", on_click=self.run_compute)
        return _layout(panel)

    def _render_controls(self, panel, c):
        panel.enum(
            "score_field",
            c.fields,
            default=default_score_field(c.fields),
            label="Score field",
            view=dropdown(c.fields),
            on_change=self.on_change,
        )
        modes = types.RadioGroup(orientation="horizontal")
        for m in MODES:
            modes.add_choice(m, label=MODE_LABELS[m])
        panel.enum(
            "mode", MODES, default="fraction", label="Keep by", view=modes, on_change=self.on_change
        )
        self._render_slider(panel, c)
        self._render_options(panel, c)

    def _render_options(self, panel, c):
        """Balance by a field (with its quotas) and grow from tagged samples: the options of
        ``select_coreset`` that a top-score cut takes, for a budget (not a threshold)."""
        if c.mode == "threshold":
            panel.md(
                "*Balance by* and *Grow from tagged samples* take a budget: keep by Fraction "
                "or Count to use them.",
                name="options_md",
            )
            return
        row = panel.h_stack("options_row", align_x="left", align_y="top", gap=2)
        self._optional_choice(
            row, "balance_by", c.balance_fields, "Balance by (optional)", BALANCE_BY_HELP
        )
        self._optional_choice(
            row,
            "include_tag",
            c.tags,
            "Grow from samples tagged (optional)",
            "They are kept and count against the budget; the highest scores of the others fill it",
        )
        if c.balance_by is not None:
            panel.enum(
                "balance",
                list(BALANCE_LABELS),
                default="proportional",
                label="Quotas",
                view=balance_radio(),
                on_change=self.on_change,
            )

    def _optional_choice(self, stack, name, choices, label, description):
        """A dropdown of ``choices`` whose first, empty entry (:data:`NONE`) clears it; nothing
        when there is no choice."""
        if choices:
            stack.enum(
                name,
                [NONE, *choices],
                default=NONE,
                label=label,
                description=description,
                view=dropdown(choices, none="None"),
                on_change=self.on_change,
            )

    def _render_slider(self, panel, c):
        if c.mode == "size":
            panel.int(
                "size",
                label="Count",
                default=c.default,
                min=0,
                max=c.n,
                view=_slider_view(0, c.n, 1, precision=0),
                on_change=self.on_change,
            )
        elif c.mode == "threshold":
            step = (c.hi - c.lo) / 200 if c.hi > c.lo else 0.01
            panel.float(
                "threshold",
                label="Keep scores >=",
                default=round(c.default, _digits(step)),
                view=_slider_view(c.lo, c.hi, step, precision=_digits(step)),
                on_change=self.on_change,
            )
        else:
            panel.float(
                "fraction",
                label="Fraction",
                default=c.default,
                min=0.0,
                max=1.0,
                view=_slider_view(0.0, 1.0, 0.01, precision=2),
                on_change=self.on_change,
            )

    def _render_summary(self, panel, c, sel):
        cut = "" if sel.cut is None else f" &nbsp; cut at {c.field} >= {sel.cut:.4f}"
        text = f"**Kept: {len(sel.ids):,} of {sel.n_scored:,}** scored samples{cut}"
        if c.tag is not None:
            text += (
                f"\n\n{sel.n_included:,} of them already tagged '{c.tag}', "
                f"{len(sel.ids) - sel.n_included:,} new"
            )
        if sel.per_value is not None:
            shares = sorted(sel.per_value.items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{v}: {n:,}" for v, n in shares[:8])
            more = f", and {len(shares) - 8} more values" if len(shares) > 8 else ""
            text += f"\n\nBalanced over `{c.balance_by}` ({c.balance}): {shown}{more}"
        panel.md(text, name="summary")

    def _render_histogram(self, plots, data, c, sel):
        hist, layout = histogram_plot(data.scored(c.field), c.field, sel.scores, cut=sel.cut)
        plots.plot(
            "histogram", data=hist, layout=layout, config=_PLOT_CONFIG, componentsProps=_PLOT_PROPS
        )

    def _render_distribution(self, ctx, panel, plots, data, c, sel):
        """Class shares of a label field, or, without labels, k-means clusters of the run's
        embeddings; and the label field's selector when there are several."""
        labels = label_fields(data.view)
        dist, title = None, None
        if labels:
            label_field = ctx.panel.state.get("label_field")
            label_field = label_field if label_field in labels else labels[0]
            dist = _class_shares(data.labels(label_field), sel.ids)
            title = f"{label_field}: class shares"
        else:
            emb = data.embeddings_of(c.field)
            clusters = None if emb is None else data.clusters(emb)
            if clusters is not None:
                dist = _cluster_shares(clusters, sel.ids)
                title = f"k-means clusters of {emb} (no labels)"
        if dist is not None:
            dist_data, layout = distribution_plot(dist, title)
            plots.plot(
                "classes",
                data=dist_data,
                layout=layout,
                config=_PLOT_CONFIG,
                componentsProps=_PLOT_PROPS,
            )
        if len(labels) > 1:
            panel.enum(
                "label_field",
                labels,
                default=labels[0],
                label="Class field",
                view=dropdown(labels),
                on_change=self.on_change,
            )

    def _render_actions(self, ctx, panel, c):
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
        _input_row(
            panel,
            "save_row",
            "view_name",
            "View name",
            free_view_name(ctx.dataset),
            ("save_view", "Save as view", self.save_view),
            box=("overwrite", "Overwrite"),  # between the name and its button
        )
        _input_row(
            panel,
            "tag_row",
            "tag",
            "Tag",
            "coreset",
            ("tag_kept", "Tag kept samples", self.tag_kept),
        )
        if c.mode != "threshold" and c.balance_by is None:  # ranks need a budget, unbalanced
            _input_row(
                panel,
                "rank_row",
                "rank_field",
                "Rank field (1 = first kept)",
                DEFAULT_RANK_FIELD,
                ("write_ranks", "Write ranks", self.write_ranks),
            )
        if ctx.panel.state.get("save_error"):
            panel.view("save_error", types.Warning(label=ctx.panel.state.get("save_error")))
        elif ctx.panel.state.get("last_action"):
            panel.md(ctx.panel.state.get("last_action"), name="last_action_md")

    def _render_compare(self, ctx, panel, data, c, sel):
        others = [f for f in c.fields if f != c.field]
        if not others:
            return
        panel.enum(
            "compare_field",
            others,
            label="Compare with",
            description="Overlap of the two kept sets at the chosen size",
            view=dropdown(others),
            on_change=self.on_change,
        )
        other = ctx.panel.state.get("compare_field")
        if other in others:
            o = _overlap(sel.ids, data.selection(other, *c.selection[1:]).ids)
            panel.md(
                f"**Overlap: {o['n_both']:,}** samples kept by both ({c.field}: "
                f"{o['n_a']:,}, {other}: {o['n_b']:,}; Jaccard {o['jaccard']:.2f})",
                name="overlap_md",
            )

    def _render_operations(self, panel, ops):
        """The plugin's delegated operations (scheduled from the forms) with their state and
        progress, and a button that re-reads them and reloads the App's dataset."""
        row = panel.h_stack("ops_row", align_x="left", align_y="center", gap=1)
        row.md("**Scheduled operations**", name="ops_title")
        row.btn("refresh", label="Refresh", on_click=self.refresh, variant="outlined")
        if ops is None:
            panel.md("Could not read the delegated operations.", name="ops_md")
            return
        if not ops:
            panel.md("None on this dataset.", name="ops_md")
            return
        lines = ["| operation | state | queued (UTC) |", "|---|---|---|"]
        for r in ops:
            state = _state_text(r) + (f": {r['error']}" if r["error"] else "")
            lines.append(f"| {r['name']} | {state} | {r['queued_at']} |")
        panel.md("\n".join(lines), name="ops_md")

    def _render_runs(self, panel, data, ops=None):
        rows = [dict(r, state="done") for r in data.runs()] + pending_runs(ops or [])
        if not rows:
            return
        lines = [
            "| run | state | embeddings | seed | points | neighbours |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['key']} | {r['state']} | {r.get('embeddings', '')} | {r.get('seed', '')} "
                f"| {r.get('n_samples', '')} | {r.get('redund_nn', '')} |"
            )
        panel.md("**ZCore runs**\n\n" + "\n".join(lines), name="runs_md")

    def _render_evaluations(self, ctx, panel, data):
        """The recorded coreset evaluations (does the coreset beat random on the dataset's own
        labels?): the chosen one's table and plot, newest by default; and a button that opens
        the *evaluate coreset* operator."""
        row = panel.h_stack("eval_row", align_x="left", align_y="center", gap=1)
        row.md("**Coreset evaluations**", name="eval_title")
        row.btn("evaluate", label="Evaluate coreset…", on_click=self.run_evaluate)
        evals = data.evaluations()
        if not evals:
            panel.md(
                "None yet: *Evaluate coreset…* fits a linear probe on each method's coreset and on "
                "random subsets of the same size, on the samples that have labels.",
                name="eval_md",
            )
            return
        keys = list(evals)
        key = ctx.panel.state.get("evaluation_key")
        key = key if key in evals else keys[-1]
        if len(keys) > 1:
            panel.enum(
                "evaluation_key",
                keys,
                default=keys[-1],
                label="Evaluation",
                view=dropdown(keys),
                on_change=self.on_change,
            )
        result = evals[key]
        info = result.info
        emb = info.get("embeddings") or ""
        emb = ", ".join(emb) if isinstance(emb, list | tuple) else emb
        panel.md(
            f"`{key}`: labels `{info.get('label_field', '')}`, embeddings `{emb}`; "
            f"{info['n_pool']:,} samples to select from, {info['n_test']:,} held out\n\n"
            + result.to_markdown(),
            name="eval_md",
        )
        layout = dict(
            result.plot_layout(),
            height=PLOT_HEIGHT + 40,
            width=PLOT_WIDTH,
            margin={"l": 55, "r": 15, "t": 50, "b": 50},
            title={
                "text": "Probe accuracy vs kept fraction",
                "font": {"size": 13},
                "x": 0,
                "xanchor": "left",
            },
            showlegend=True,
            legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
        )
        layout["xaxis"] = dict(layout["xaxis"], range=[0, 1])  # kept fractions, even just one
        panel.plot(
            "eval_plot",
            data=result.plot_traces(),
            layout=layout,
            config=_PLOT_CONFIG,
            componentsProps=_PLOT_PROPS,
        )


class _Controls(
    namedtuple(
        "_Controls",
        "fields field mode value n default lo hi balance_by balance tag balance_fields tags",
    )
):
    """The control values of one event (see :meth:`CoresetPanel._controls`)."""

    @property
    def selection(self):
        """The arguments of :func:`_select_coreset` after the view."""
        return self.field, self.mode, self.value, self.balance_by, self.balance, self.tag


def _input_row(panel, stack, name, label, default, button, box=None):
    """A text input and, level with its box, a button ``(name, label, on_click)``, optionally
    after a checkbox ``(name, label)``, in the horizontal stack ``stack`` (the App keeps the
    values under ``<stack>.<name>``, see :meth:`CoresetPanel._text`)."""
    row = panel.h_stack(stack, align_x="left", align_y="top", gap=1)
    row.str(name, label=label, default=default)
    if box is not None:
        row.bool(
            box[0],
            label=box[1],
            default=False,
            view=types.CheckboxView(componentsProps=_BESIDE_INPUT),
        )
    btn_name, btn_label, on_click = button
    row.btn(
        btn_name,
        label=btn_label,
        on_click=on_click,
        variant="outlined",
        componentsProps=_BESIDE_INPUT,
    )
    return row


def _slider_view(lo, hi, step, precision):
    # value_precision: the digits of the value label (FiftyOne's SliderView shows 6 otherwise)
    return types.SliderView(
        value_precision=precision, componentsProps={"slider": _slider(lo, hi, step)}
    )


def _digits(step):
    """Decimals that show a value to ``step``: 0.01 -> 2, 0.0004 -> 4 (at most 6)."""
    return int(min(6, max(0, np.ceil(-np.log10(step))))) if step > 0 else 2


def _safe_operations(ctx):
    """:func:`delegated_operations` of the event's dataset, ``None`` if they cannot be read."""
    try:
        return delegated_operations(ctx.dataset.name)
    except Exception:  # noqa: BLE001 (a listing must not break the panel)
        return None


def _layout(panel, **kwargs):
    return types.Property(panel, view=types.GridView(orientation="vertical", **kwargs))
