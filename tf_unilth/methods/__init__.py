"""The ticket methods, each a short composition of the shared parts.

Every method is a function `run(session, model, target_sparsity, epochs,
**hparams) -> trained (wrapped) model` registered here by name; it records
its rounds on the session. `tf_unilth.find_ticket` and
`examples/find_ticket.py` dispatch through this registry.
"""

from tf_unilth.methods import dense, dlth, lth, random_ticket, unilth

METHODS = {
    "dense": dense.run,
    "random": random_ticket.run,
    "lth": lth.run,
    "dlth": dlth.run,
    "unilth": unilth.run_unilth,
    "unidlth": unilth.run_unidlth,
}


def get(name):
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; known: {sorted(METHODS)}.")
    return METHODS[name]
