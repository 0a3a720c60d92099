"""tf_unilth: find winning lottery tickets and transform random tickets into winning ones.

Importing it sets `TF_USE_LEGACY_KERAS=1` (unless already set) so that a
`tf.keras` you have not touched yet resolves to Keras 2, the Keras tfmot works
with; nothing else happens at import. The public API below loads on first use
(TensorFlow with it); the parts live in one module per concern: `sparsity`
(the numpy core), `schedules`, `wrapper`, `masks`, `regularizers`,
`callbacks`, `search` (what a method may use), `methods`, `data`, `models`,
`export`, `analysis`, `distribute`.
"""

import importlib
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from tf_unilth._version import __version__  # noqa: E402,F401

_SUBMODULES = (
    "analysis", "callbacks", "cli", "data", "distribute", "engine", "export", "finder",
    "learning_rates", "masks", "methods", "models", "regularizers", "results", "resume",
    "schedules", "search", "serialization", "sparsity", "ticket", "training", "wrapper",
)

# name -> (module, attribute): the curated public API.
_API = {
    "keras": ("_compat", "keras"), "tf": ("_compat", "tf"), "tfmot": ("_compat", "tfmot"),
    "KERAS2_RULE": ("_compat", "KERAS2_RULE"), "check_model": ("_compat", "check_model"),
    "PlateauTrigger": ("callbacks", "PlateauTrigger"),
    "RegularizerGrowth": ("callbacks", "RegularizerGrowth"),
    "Rewind": ("callbacks", "Rewind"), "UpdatePruningStep": ("callbacks", "UpdatePruningStep"),
    "to_tflite": ("export", "to_tflite"),
    "TicketResult": ("finder", "TicketResult"), "find_ticket": ("kits", "find_ticket"),
    "ticket_sparsity": ("finder", "ticket_sparsity"),
    "Method": ("methods", "Method"), "hparam": ("methods", "hparam"),
    "register_method": ("methods", "register_method"),
    "GrowingRegularizer": ("regularizers", "GrowingRegularizer"),
    "OneShotSchedule": ("schedules", "OneShotSchedule"),
    "TriggeredSchedule": ("schedules", "TriggeredSchedule"),
    "custom_object_scope": ("serialization", "custom_object_scope"),
    "load_model": ("serialization", "load_model"),
    "Mask": ("sparsity", "Mask"), "register_criterion": ("sparsity", "register_criterion"),
    "MonotonePruneLowMagnitude": ("wrapper", "MonotonePruneLowMagnitude"),
    "prune": ("wrapper", "prune"), "strip": ("wrapper", "strip"),
    "make_deterministic": ("engine.execution", "make_deterministic"),
    # What a search raises on purpose (the command line prints them as one line).
    "AllocationError": ("sparsity.allocation", "AllocationError"),
    "CorruptState": ("engine.journal", "CorruptState"),
    "DegenerateTicket": ("search", "DegenerateTicket"),
    "ReplayMismatch": ("engine.journal", "ReplayMismatch"),
    "RunLocked": ("engine.journal", "RunLocked"),
}

__all__ = sorted(set(_API) | set(_SUBMODULES) | {"__version__"})


def __getattr__(name):
    if name in _API:
        module, attribute = _API[name]
        value = getattr(importlib.import_module(f"tf_unilth.{module}"), attribute)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"tf_unilth.{name}")
    else:
        raise AttributeError(f"module 'tf_unilth' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__
