"""The ticket methods: registered dataclasses over the `Search` protocol.

Each method's fields are its hyperparameters (defaults and help in one
place); `run(search, model, target_sparsity)` is its algorithm. Register your
own with `register_method` (see `methods.base` and docs/ALGORITHMS.md, "Write
your own method"); `tf_unilth.find_ticket` and the command line find it by name.
"""

from tf_unilth.methods.base import (HyperparameterError, Method, get, hparam, names,  # noqa: F401
                                    register_method)
from tf_unilth.methods import dense, dlth, lth, random_ticket, unilth  # noqa: F401


class _Registry:
    """Earlier versions' `METHODS` mapping (name -> method), read-only."""

    def __contains__(self, name):
        return name in names()

    def __iter__(self):
        return iter(names())

    def __len__(self):
        return len(names())

    def __getitem__(self, name):
        return get(name)

    def keys(self):
        return names()


METHODS = _Registry()
