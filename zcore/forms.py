"""Helpers shared by the operator forms (the plugin's ``__init__.py`` and the evaluation form)."""

import fiftyone.operators.types as types

from .core.methods import BALANCE_QUOTAS


def form_error(inputs, name, message):
    """An error shown in the form that also makes it invalid: Execute and Schedule are disabled,
    and a programmatic call fails with ``message`` before ``execute`` runs."""
    prop = inputs.view(name, types.Error(label=message))
    prop.invalid = True
    prop.error_message = message
    return prop


#: The value of the "no choice" entry of an optional dropdown (:func:`dropdown` ``none=``).
NONE = ""


def dropdown(choices, *, none=None):
    """A dropdown whose labels are the choices themselves (field names, tags, run keys); with
    ``none`` (its label), a first entry of value :data:`NONE` that clears an optional choice."""
    view = types.DropdownView()
    if none is not None:
        view.add_choice(NONE, label=none)
    for c in choices:
        view.add_choice(c, label=c)
    return view


#: What each ``select_coreset(balance=...)`` quota means, in the words of the forms and the panel.
BALANCE_LABELS = dict(
    zip(BALANCE_QUOTAS, ("Proportional to each value's samples", "Equal per value"), strict=True)
)

#: The help of a "Balance by" input (the operator form and the panel).
BALANCE_BY_HELP = (
    "A label, string or int field: each of its values gets a share of the budget and the "
    "method runs inside each value's samples"
)


def balance_radio():
    """The horizontal radio of the ``balance`` quotas (:data:`BALANCE_LABELS`)."""
    view = types.RadioGroup(orientation="horizontal")
    for value, label in BALANCE_LABELS.items():
        view.add_choice(value, label=label)
    return view
