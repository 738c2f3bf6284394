"""Helpers shared by the operator forms (the plugin's ``__init__.py`` and the evaluation form)."""

import fiftyone.operators.types as types


def form_error(inputs, name, message):
    """An error shown in the form that also makes it invalid: Execute and Schedule are disabled,
    and a programmatic call fails with ``message`` before ``execute`` runs."""
    prop = inputs.view(name, types.Error(label=message))
    prop.invalid = True
    prop.error_message = message
    return prop


def dropdown(choices):
    """A dropdown whose labels are the choices themselves (field names, tags, run keys)."""
    view = types.DropdownView()
    for c in choices:
        view.add_choice(c, label=c)
    return view
