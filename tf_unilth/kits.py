"""Which kit a model uses: the tfmot kit (`tf_unilth.kit`, tf_keras models)
or the Keras 3 kit (`tf_unilth.keras3.kit`, any Keras 3 backend).

A method asks `kits.of(model)` (or `search.kit`) for the verbs it needs:
read and write masks, choose removals, attach the growing penalty, the
schedules and callbacks. Importing this module imports neither TensorFlow nor
Keras; the kit a model needs is imported when first asked for.
"""

import importlib
import sys


def is_keras3(obj):
    """True when `obj` is a Keras 3 object (the `keras` package >= 3, not tf_keras)."""
    module = type(obj).__module__ or ""
    if module.startswith("tf_keras") or "keras" not in sys.modules:
        return False
    return any((c.__module__ or "").split(".")[0] == "keras" for c in type(obj).__mro__)


def of(model):
    """The kit module for `model`."""
    return named("keras3" if is_keras3(model) else "tfmot")


def named(name):
    """The kit module called `name` ('tfmot' or 'keras3')."""
    if name in ("3", "keras3"):
        return importlib.import_module("tf_unilth.keras3.kit")
    if name in ("2", "tfmot", "tf_keras"):
        return importlib.import_module("tf_unilth.kit")
    raise ValueError(f"Unknown kit {name!r}; known: 'tfmot' (tf_keras), 'keras3'.")


def find_ticket(model, method, *args, **kwargs):
    """`tf_unilth.find_ticket`: the Keras 3 search for a Keras 3 model, the
    tfmot search otherwise (same arguments, same TicketResult; the arguments
    are documented on `tf_unilth.finder.find_ticket`). Dispatching here
    imports neither: a Keras 3 user on JAX or PyTorch needs no TensorFlow."""
    module = "tf_unilth.keras3.finder" if is_keras3(model) else "tf_unilth.finder"
    return importlib.import_module(module).find_ticket(model, method, *args, **kwargs)
