"""The selection-method registry: one spec per method, the single source of what it needs and accepts.

A :class:`MethodSpec` holds the method's function, its label and help text (shown in the App), what
it needs (embeddings, scores) and its options, each with its constraint, label and help;
an option's default is the function's own keyword default, so it is written once, in the
signature. The spec validates a call's options before the function runs (unknown names, types,
ranges, choices: each option is a :class:`~zcore.core.config.OptionSpec`, the same class as the
score options'), and the FiftyOne layer and the operator form are built from the same specs:

- :func:`zcore.core.methods.select` and every registered method validate through their spec;
- ``zcore.collection.select_coreset`` asks the spec what to read (embeddings, scores) before it
  reads anything;
- the ``select_coreset`` operator lists :func:`app_methods` with their labels and help, and
  builds one input per option whose ``form`` is set.

Add a method: write ``fn(scores, embeddings, n_keep, *, seed=None, **options)`` and decorate it
with :func:`method`. That is the only place that knows about it.
"""

import dataclasses
import functools
import inspect

from .config import OptionSpec

#: The method ``select_coreset`` runs when none is named (an alias, see :func:`alias`).
DEFAULT_METHOD = "auto"


def Option(name, kind, help, *, label="", **constraints):
    """The :class:`~zcore.core.config.OptionSpec` of a method option; its default is filled in
    from the method's signature when the method is registered (:func:`method`). A ``None``
    default also accepts ``None``."""
    return OptionSpec(name, None, kind, help, label, **constraints)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """What a selection method is, needs and accepts (see the module docstring).

    ``scores``: ``"required"``, ``"optional"`` (used when given, e.g. to rank inside clusters)
    or ``"unused"`` (only marks missing rows); ``needs_scores_if``, for ``"optional"``, says
    which option values make them required. ``ordered``: the indices come back best first (else
    sorted increasingly). ``include``: how it grows from samples already in the coreset
    (a key of :data:`INCLUDE_MODES`); ``ranking``: what its ranked order is (a key of
    :data:`RANKING_MODES`).
    """

    name: str
    function: object
    label: str
    help: str
    needs_embeddings: bool
    scores: str
    options: tuple = ()
    needs_scores_if: object = None
    ordered: bool = False
    app: bool = True
    include: str = "fill"
    ranking: str = "nested"
    region: str = "cluster"

    @property
    def include_help(self):
        """What ``include=`` (samples already in the coreset) means for this method (for
        ``"quota"``, in the words of its ``region``: a cluster, a score stratum, ...)."""
        return INCLUDE_MODES[self.include].format(region=self.region)

    @property
    def ranking_help(self):
        """What ``ranked=True`` (the order samples enter the coreset) means for this method."""
        return RANKING_MODES[self.ranking]

    @property
    def option_names(self):
        return tuple(o.name for o in self.options)

    def option(self, name):
        for o in self.options:
            if o.name == name:
                return o
        raise KeyError(name)

    def defaults(self):
        """``{option: default}`` of the options shown in the App form."""
        return {o.name: o.default for o in self.options if o.form}

    def check_options(self, options):
        """The options converted and checked; unknown names raise ``ValueError`` listing the
        valid ones, so a typo fails before any data is read."""
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            valid = ", ".join(self.option_names) or "none"
            raise ValueError(
                f"method {self.name!r} has no option(s) {', '.join(unknown)}; its options: {valid}"
            )
        return {name: self.option(name).check(value) for name, value in options.items()}

    def needs_scores(self, options=None):
        """Whether the method cannot run without scores, with these ``options``."""
        if self.scores == "required":
            return True
        if self.scores == "unused" or self.needs_scores_if is None:
            return False
        return bool(self.needs_scores_if(options or {}))


#: How a method grows a coreset from samples already in it (``include=``), by spec ``include``.
INCLUDE_MODES = {
    "fill": "they are kept and count against the budget; the method picks the rest from the "
    "other samples",
    "quota": "they are kept and count toward their {region}'s share of the budget, so each "
    "{region} they already cover gets fewer new samples",
    "dedup": "they are kept, and the samples that duplicate them are removed before the rest "
    "is drawn, so the new samples do not repeat what is already in",
}

#: What a method's ranked order is (``ranked=True``), by spec ``ranking``. (The App shows these
#: words; docs/selection.md has the construction.)
RANKING_MODES = {
    "exact": "highest scores first: the first N samples are always this method's coreset of N",
    "nested": "built in steps that double up to the budget (... a quarter, half, all of it): "
    "each step is this method's coreset of that size grown from the step before, and sizes in "
    "between come close to it",
}

_REGISTRY = {}


def method(*, label, help, needs_embeddings, scores, options=(), needs_scores_if=None, **kw):
    """Decorator registering a selection method: the returned function validates its options
    through the spec, then runs the decorated one. See :class:`MethodSpec` for the arguments."""

    def register(fn):
        params = inspect.signature(fn).parameters
        filled = []
        for o in options:
            if o.name not in params:
                raise TypeError(f"{fn.__name__} has no keyword {o.name!r} for its Option")
            default = params[o.name].default
            allow_none = o.allow_none or default is None
            filled.append(dataclasses.replace(o, default=default, allow_none=allow_none))

        @functools.wraps(fn)
        def run(scores, embeddings, n_keep, *, seed=None, **opts):
            return fn(scores, embeddings, n_keep, seed=seed, **spec.check_options(opts))

        spec = MethodSpec(
            name=fn.__name__,
            function=run,
            label=label,
            help=help,
            needs_embeddings=needs_embeddings,
            scores=scores,
            options=tuple(filled),
            needs_scores_if=needs_scores_if,
            **kw,
        )
        if spec.name in _REGISTRY:
            raise ValueError(f"selection method {spec.name!r} is registered twice")
        _REGISTRY[spec.name] = spec
        run.spec = spec
        return run

    return register


def alias(name, *, target, target_options, label, help):
    """Register ``name`` as ``target`` with fixed options (the documented default, ``auto``)."""
    base = _REGISTRY[target]
    fixed = base.check_options(target_options)

    def run(scores, embeddings, n_keep, *, seed=None, include=None):
        extra = {} if include is None else {"include": include}
        return base.function(scores, embeddings, n_keep, seed=seed, **fixed, **extra)

    run.__name__ = name
    run.__doc__ = f"``{target}`` with options {fixed or 'at their defaults'}: {help}"
    spec = MethodSpec(
        name=name,
        function=run,
        label=label,
        help=help,
        needs_embeddings=base.needs_embeddings,
        scores="required" if base.needs_scores(fixed) else "optional",
        ordered=base.ordered,
        include=base.include,
        ranking=base.ranking,
    )
    _REGISTRY[name] = spec
    run.spec = spec
    return run


def _registered():
    """The registry, with every built-in method registered (they register when
    :mod:`zcore.core.methods`, which imports the peers, is imported)."""
    from . import methods  # noqa: F401

    return _REGISTRY


def get_spec(name):
    """The :class:`MethodSpec` called ``name``; ``ValueError`` listing the valid names."""
    _registered()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown selection method {name!r}; choose one of {sorted(_REGISTRY)}"
        ) from None


def method_names():
    """Every registered method, in registration order."""
    return tuple(_registered())


def app_methods():
    """The specs offered in the App's form: the default first, then in registration order."""
    specs = [s for s in _registered().values() if s.app]
    return tuple(sorted(specs, key=lambda s: s.name != DEFAULT_METHOD))
