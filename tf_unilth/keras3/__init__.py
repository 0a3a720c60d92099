"""tf_unilth on Keras 3 (the `keras` package >= 3; JAX, TensorFlow or PyTorch
backend), beside the tfmot path for tf_keras. Every method runs here through
the same `run()`: `tf_unilth.find_ticket` picks this path for a Keras 3 model.

    import keras, tf_unilth
    result = tf_unilth.find_ticket(keras_model, "lth", (x, y), (x_val, y_val), ...)

The parts: `core` (the masked-layer hook: prune, strip, masks, the growing
penalty), `schedules`, `callbacks`, `search`, `finder`, `export` (LiteRT), and
`kit` (the verbs the methods use). Nothing here imports TensorFlow except
the TensorFlow backend and the TFLite export. See docs/KERAS3.md.
"""

import importlib

_API = {
    "prune": ("core", "prune"), "strip": ("core", "strip"), "get_masks": ("core", "get_masks"),
    "sparsity": ("core", "sparsity"), "wrappers": ("core", "wrappers"),
    "find_ticket": ("finder", "find_ticket"), "TicketResult": ("finder", "TicketResult"),
    "ticket_sparsity": ("finder", "ticket_sparsity"),
    "UpdatePruningStep": ("callbacks", "UpdatePruningStep"), "Rewind": ("callbacks", "Rewind"),
    "PlateauTrigger": ("callbacks", "PlateauTrigger"),
    "RegularizerGrowth": ("callbacks", "RegularizerGrowth"),
    "to_tflite": ("export", "to_tflite"),
}
_SUBMODULES = ("core", "schedules", "callbacks", "search", "finder", "export", "kit", "models")


def __getattr__(name):
    if name in _API:
        module, attribute = _API[name]
        value = getattr(importlib.import_module(f"tf_unilth.keras3.{module}"), attribute)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"tf_unilth.keras3.{name}")
    else:
        raise AttributeError(f"module 'tf_unilth.keras3' has no attribute {name!r}")
    globals()[name] = value
    return value
