"""Every option of ZCore scoring, each written once: the law's hyperparameters and where to run.

# ---------------------------------------------------------------------------------------------
# API for the glue (stable; the glue, the operators and the App form code against it)
#
#   from zcore.core import (ScoreConfig, Execution, score_components, combine_components,
#                           Components, default_n_samples, make_progress)
#
#   ScoreConfig.create(**kw) / ScoreConfig(**kw)      the law, validated once, frozen
#       .n_samples .sample_dim .redund_nn .redund_exp .rand_init
#       .n_points(n)                                  n_samples with None resolved for n samples
#       .to_dict() / ScoreConfig.from_dict(d)         for run records (from_dict ignores other keys)
#       .replace(**changes)                           a validated copy
#   Execution.create(**kw) / Execution(**kw)          where/how, validated once, frozen
#       .engine .device .backend .client .use_multiprocessing .num_workers
#       .engine_name                                  the concrete engine ("numpy"/"numba"/"torch")
#       .to_dict() / Execution.from_dict(d)           (a Client object is recorded by its address)
#   ScoreConfig.options() / Execution.options()       tuples of OptionSpec, for forms and docs:
#       spec.name .default .kind ("int"/"float"/"bool"/"str"/"object") .help (one line)
#       .label (short form label) .minimum .choices .allow_none .doc_type .details
#   split_options(options) -> (law_kw, execution_kw)  ValueError on an unknown name (lists them)
#   default_n_samples(n)                              min(1_000_000, 10 * n)
#   score_components(X, *, config, execution, seed, progress=None) -> Components(coverage,
#       penalty, init, shift)                         (zcore.core.scoring)
#   combine_components(coverage, penalty, init, shift, *, rand_init=True) -> scores
#
#   Progress, one contract everywhere (zcore.core.progress): progress(done, total, label);
#   done/total numbers of the current stage, label a short text ("dimension statistics",
#   "scoring", ...). ``True`` = tqdm bars, ``False``/``None`` = silent.
# ---------------------------------------------------------------------------------------------

A hyperparameter or an execution option is a row of :data:`LAW_OPTIONS` or
:data:`EXECUTION_OPTIONS`: name, default, kind, constraint, help and form label. Everything else
is generated from those rows: the attributes and validation of :class:`ScoreConfig` and
:class:`Execution`, the keyword arguments, the signature and the parameter documentation of
:func:`zcore.zcore_scores`, and (in the glue) the operator's inputs and defaults.
"""

import numbers
from dataclasses import dataclass

from .validation import check_float, check_int

#: Cap on the default number of sampling points, as in the paper.
MAX_DEFAULT_POINTS = 1_000_000
#: Default sampling points per sample.
POINTS_PER_SAMPLE = 10


def default_n_samples(n):
    """``min(1_000_000, 10 * n)``: the default number of sampling points for ``n`` samples."""
    return int(min(MAX_DEFAULT_POINTS, POINTS_PER_SAMPLE * n))


_MISSING = object()


@dataclass(frozen=True)
class OptionSpec:
    """One option: its name, default, kind and constraint, and the words that describe it.

    The one option class of zcore: the score law's and the execution's options here, and every
    selection method's options (:mod:`zcore.core.registry`); forms and docstrings are built
    from it.

    Attributes
    ----------
    name : str
    default : object
    kind : {"int", "float", "bool", "str", "choice", "ints", "array", "object"}
        ``"choice"``: one of ``choices`` (exactly); ``"int"`` with ``choices`` also accepts one of
        them (e.g. ``n_clusters="auto"``); ``"ints"``: a non-empty sequence of ints;
        ``"array"``/``"object"``: checked by their user.
    help : str
        One line, for forms and tooltips.
    label : str
        Short form label.
    minimum, maximum : int or float, optional
        Bounds (``int``/``float``/``ints`` kinds).
    choices : tuple of str, optional
        Allowed values (``str`` kind, compared case-insensitively).
    allow_none : bool
        Whether ``None`` is accepted (it then means what ``help`` says).
    doc_type : str
        The type as the numpydoc Parameters section writes it.
    details : str
        Further documentation, appended to ``help`` in docstrings.
    convert : callable, optional
        Applied to a value other than ``None`` before the check (e.g. a ``torch.device`` to its
        name).
    form : bool
        Shown in the App's forms (method options; the score options have their own layout).
    """

    name: str
    default: object
    kind: str
    help: str
    label: str
    minimum: object = None
    choices: tuple = None
    allow_none: bool = False
    doc_type: str = ""
    details: str = ""
    convert: object = None
    maximum: object = None
    form: bool = False

    def check(self, value):
        """``value`` converted and checked; ``ValueError`` saying what to change otherwise."""
        if value is None and self.allow_none:
            return None
        if self.convert is not None and value is not None:
            value = self.convert(value)
        if self.kind in ("array", "object"):
            return value
        if self.kind in ("choice", "int") and self.choices and isinstance(value, str):
            if value not in self.choices:
                raise ValueError(f"{self.name} must be one of {list(self.choices)}; got {value!r}")
            return value
        if self.kind == "choice":
            raise ValueError(f"{self.name} must be one of {list(self.choices)}; got {value!r}")
        if self.kind == "int":
            return check_int(value, self.name, min_value=self.minimum, max_value=self.maximum)
        if self.kind == "float":
            return check_float(value, self.name, min_value=self.minimum, max_value=self.maximum)
        if self.kind == "ints":
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ValueError(f"{self.name} must be a sequence of ints; got {value!r}")
            values = tuple(value)
            if not values:
                raise ValueError(f"{self.name} must name at least one level")
            return tuple(check_int(v, self.name, min_value=self.minimum) for v in values)
        if self.kind == "bool":
            if isinstance(value, numbers.Integral) and int(value) in (0, 1):
                return bool(value)  # bools, numpy bools, and 0/1
            raise ValueError(f"{self.name} must be a bool, got {value!r}")
        if self.kind == "str":
            if self.choices is None:
                if not isinstance(value, str):
                    raise ValueError(f"{self.name} must be a string, got {value!r}")
                return value
            if not isinstance(value, str) or value.lower() not in self.choices:
                valid = ", ".join(repr(c) for c in self.choices)
                raise ValueError(f"unknown {self.name} {value!r}; valid {self.name}s: {valid}")
            return value.lower()
        return value

    def doc(self):
        """The numpydoc entry of this option (``name : type, default=...`` and its text)."""
        text = self.help + (" " + self.details if self.details else "")
        lines = _wrap(text, 88)
        default = f'"{self.default}"' if isinstance(self.default, str) else repr(self.default)
        return f"{self.name} : {self.doc_type}, default={default}\n" + "".join(
            f"    {line}\n" for line in lines
        )


def _wrap(text, width):
    import textwrap

    return textwrap.wrap(text, width) or [""]


#: The score law's hyperparameters (:class:`ScoreConfig`), in signature order.
LAW_OPTIONS = (
    OptionSpec(
        "n_samples",
        None,
        "int",
        "Number of random points; None means min(1_000_000, 10 * N).",
        "Sampling points",
        minimum=1,
        allow_none=True,
        doc_type="int or None",
        details="More points give more stable scores (two seeds agree more) at a proportional "
        "cost.",
    ),
    OptionSpec(
        "sample_dim",
        2,
        "int",
        "How many embedding dimensions each random point is drawn in (the paper uses 2).",
        "Dimensions per point",
        minimum=1,
        doc_type="int",
        details="Must not exceed the number of non-constant dimensions.",
    ),
    OptionSpec(
        "redund_nn",
        1000,
        "int",
        "Neighbours penalised around each covering sample; capped at N - 2.",
        "Redundancy neighbours",
        minimum=1,
        doc_type="int",
    ),
    OptionSpec(
        "redund_exp",
        4,
        "float",
        "Exponent of the redundancy penalty 1 / d**redund_exp; 0 spreads it evenly.",
        "Redundancy exponent",
        minimum=0,
        doc_type="float",
    ),
    OptionSpec(
        "rand_init",
        True,
        "bool",
        "Start each score from a U(0, 1) draw (the paper's default).",
        "Random initial score",
        doc_type="bool",
        details="The draw is always taken from the generator, so this option changes nothing else.",
    ),
)


def _device_name(device):
    """A ``torch.device`` by its name (``"cuda:1"``); anything else as given."""
    return str(device) if hasattr(device, "type") and hasattr(device, "index") else device


#: The engines :class:`Execution` accepts (see :mod:`zcore.core.engines`).
ENGINE_CHOICES = ("auto", "numpy", "numba", "torch")
#: The backends :class:`Execution` accepts.
BACKEND_CHOICES = ("local", "dask")

#: Where and how the law is computed (:class:`Execution`); none of these changes the scores.
EXECUTION_OPTIONS = (
    OptionSpec(
        "use_multiprocessing",
        False,
        "bool",
        "Split the points across forked worker processes sharing the embeddings in memory.",
        "Use worker processes",
        doc_type="bool",
        details="The shared memory is released even when a worker fails or the run is interrupted.",
    ),
    OptionSpec(
        "num_workers",
        None,
        "int",
        "Worker processes (use_multiprocessing), or LocalCluster workers (backend='dask'); "
        "None means one per available CPU.",
        "Worker processes",
        minimum=1,
        allow_none=True,
        doc_type="int or None",
    ),
    OptionSpec(
        "engine",
        "auto",
        "str",
        "How the law is computed; every engine gives bit-identical scores.",
        "Engine",
        choices=ENGINE_CHOICES,
        doc_type='{"auto", "numpy", "numba", "torch"}',
        details='"auto" uses the compiled "numba" engine when numba is installed, else "numpy" '
        '(the straightforward reference), and "torch" only when a device is given.',
    ),
    OptionSpec(
        "device",
        None,
        "str",
        'Torch device for engine="torch" ("cpu", "cuda", "cuda:1"...).',
        "GPU device (optional)",
        allow_none=True,
        doc_type="str or None",
        convert=_device_name,
    ),
    OptionSpec(
        "backend",
        "local",
        "str",
        'Where the points are scored: in this process ("local") or on a Dask cluster ("dask").',
        "Backend",
        choices=BACKEND_CHOICES,
        doc_type='{"local", "dask"}',
        details='"dask" shards the rows of the embeddings across the workers of a Dask cluster '
        "(zcore.core.dask_backend), for matrices too large for one machine; same scores as "
        '"local" for the same seed. Needs dask[distributed] (requirements-dask.txt) and zcore '
        'installed on the workers; engine is then what each shard runs ("auto"/"numba" or '
        '"numpy").',
    ),
    OptionSpec(
        "client",
        None,
        "object",
        "With backend='dask': a distributed.Client or a scheduler address ('tcp://host:8786').",
        "Dask scheduler",
        allow_none=True,
        doc_type="distributed.Client, str or None",
        details="'tls://...' connects with the TLS files named by ZCORE_DASK_TLS_CA_FILE, "
        "ZCORE_DASK_TLS_CERT and ZCORE_DASK_TLS_KEY (or pass a distributed.Client built with a "
        "Security). None starts a LocalCluster of num_workers processes for the call and closes "
        "it after. A Dask cluster can run code in this process and receives the embeddings: use "
        "only clusters you control (docs/dask.md, Trust).",
    ),
)


class _Options:
    """Frozen options built from a table of :class:`OptionSpec`, validated once at construction."""

    _SPECS = ()
    __slots__ = ()

    def __init__(self, **options):
        names = {s.name for s in self._SPECS}
        unknown = sorted(set(options) - names)
        if unknown:
            valid = ", ".join(s.name for s in self._SPECS)
            raise ValueError(
                f"unknown {type(self).__name__} option(s) {', '.join(unknown)}; valid: {valid}"
            )
        for spec in self._SPECS:
            object.__setattr__(self, spec.name, spec.check(options.get(spec.name, spec.default)))
        self._validate()

    @classmethod
    def create(cls, **options):
        """The validated, frozen options (unset ones take their default)."""
        return cls(**options)

    @classmethod
    def options(cls):
        """The :class:`OptionSpec` of every option, in signature order."""
        return cls._SPECS

    @classmethod
    def from_dict(cls, d):
        """From :meth:`to_dict` (or a run record): the options' keys are read, others ignored."""
        return cls(**{s.name: d[s.name] for s in cls._SPECS if s.name in d})

    def to_dict(self):
        """``{name: value}`` of every option (plain values: for run records and JSON)."""
        return {s.name: getattr(self, s.name) for s in self._SPECS}

    def replace(self, **changes):
        """A copy with ``changes`` applied, validated again."""
        return type(self)(**{**self._values(), **changes})

    def _values(self):
        return {s.name: getattr(self, s.name) for s in self._SPECS}

    def _validate(self):
        """Checks across options (none by default)."""

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is frozen; use .replace({name}=...)")

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._values().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self):
        return hash((type(self), tuple(repr(v) for v in self._values().values())))

    def __reduce__(self):
        return (_rebuild, (type(self), self._values()))


def _rebuild(cls, values):
    return cls(**values)


class ScoreConfig(_Options):
    """The score law's hyperparameters (:data:`LAW_OPTIONS`), validated once, frozen.

    ``ScoreConfig(sample_dim=3)`` or ``ScoreConfig.create(...)``; unset options take their
    defaults. See :func:`zcore.zcore_scores` for what each means.
    """

    _SPECS = LAW_OPTIONS
    __slots__ = tuple(s.name for s in LAW_OPTIONS)

    def n_points(self, n):
        """The number of sampling points for ``n`` samples (``n_samples``, or its default)."""
        return default_n_samples(n) if self.n_samples is None else self.n_samples


class Execution(_Options):
    """Where and how the law is computed (:data:`EXECUTION_OPTIONS`), validated once, frozen.

    Every combination is checked here, once: the engine name and its device rule, the backend,
    ``client`` only with ``backend="dask"``, no worker processes with torch or Dask. The engine's
    package (numba, torch, dask.distributed) must be importable (``ImportError`` saying what to
    install). :attr:`engine_name` is the concrete engine ``engine`` stands for.
    """

    _SPECS = EXECUTION_OPTIONS
    __slots__ = (*(s.name for s in EXECUTION_OPTIONS), "engine_name")

    def _validate(self):
        from . import engines

        name = engines.resolve_engine_name(self.engine, device=self.device)
        if self.use_multiprocessing and name == "torch":
            raise ValueError(
                "use_multiprocessing works with the numpy and numba engines; the torch engine "
                "runs in one process (forking after a GPU is initialised is unsafe)"
            )
        if self.backend == "local":
            if self.client is not None:
                raise ValueError("client is used only with backend='dask'; pass backend='dask'")
            engines.ENGINES[name].check(self.device)
        else:
            if self.use_multiprocessing:
                raise ValueError(
                    "backend='dask' runs on the cluster's workers; leave use_multiprocessing off "
                    "(use num_workers for the size of the LocalCluster, or pass a client)"
                )
            if self.device is not None or name == "torch":
                raise ValueError(
                    "backend='dask' runs the numba or numpy engine on each shard, not torch"
                )
            from .dask_access import check_client
            from .dask_backend import require_dask

            require_dask()
            check_client(self.client)  # type, and TLS settings of a tls:// address
        object.__setattr__(self, "engine_name", name)

    def engine_impl(self):
        """The registry's engine that runs here (:class:`zcore.core.engines.Engine`)."""
        from . import engines

        return engines.ENGINES[self.engine_name]

    def to_dict(self):
        """As :meth:`_Options.to_dict`, with a ``distributed.Client`` recorded by its address."""
        d = super().to_dict()
        client = d["client"]
        if client is not None and not isinstance(client, str):
            scheduler = getattr(client, "scheduler", None)
            d["client"] = getattr(scheduler, "address", None) or repr(client)
        return d


#: Every option name, law first, in the order of :func:`zcore.zcore_scores`'s signature.
ALL_OPTIONS = LAW_OPTIONS + EXECUTION_OPTIONS


def split_options(options):
    """``(law_kw, execution_kw)`` from flat keyword options; ``ValueError`` for an unknown name,
    listing the valid ones."""
    law_names = {s.name for s in LAW_OPTIONS}
    exec_names = {s.name for s in EXECUTION_OPTIONS}
    unknown = sorted(set(options) - law_names - exec_names)
    if unknown:
        valid = ", ".join(s.name for s in ALL_OPTIONS)
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; valid options: {valid}")
    law = {k: v for k, v in options.items() if k in law_names}
    run = {k: v for k, v in options.items() if k in exec_names}
    return law, run


def resolve(config=None, execution=None, **options):
    """The ``(ScoreConfig, Execution)`` of a call given either objects or flat options.

    ``config`` and a law option (or ``execution`` and an execution option) together are refused:
    one of them would be silently ignored.
    """
    law, run = split_options(options)
    config = _one(ScoreConfig, config, law, "config")
    execution = _one(Execution, execution, run, "execution")
    return config, execution


def _one(cls, obj, kw, what):
    if obj is None:
        return cls(**kw)
    if not isinstance(obj, cls):
        raise TypeError(f"{what} must be a {cls.__name__}, got {type(obj).__name__}")
    if kw:
        names = ", ".join(sorted(kw))
        raise ValueError(
            f"pass the options {names} either in {what}= or as keywords, not both "
            f"(e.g. {what}={what}.replace({sorted(kw)[0]}=...))"
        )
    return obj
