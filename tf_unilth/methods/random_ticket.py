"""The random control: a seeded random mask at the target sparsity, trained
from the same initialization with the mask fixed and no regularization.
A winning ticket has to beat this."""

from tf_unilth import masks, wrapper
from tf_unilth.callbacks import UpdatePruningStep
from tf_unilth.methods.dense import _best_epoch


def run(session, model, target_sparsity, epochs=20, seed=0, output_rate_scale=0.5,
        block_size=None, allocation="uniform"):
    with session.strategy.scope():
        pruned = wrapper.prune(model)
    if allocation == "erk":
        rate, overrides = masks.allocation_rates(
            pruned, masks.erk_densities(pruned, 1.0 - target_sparsity))
    else:
        rate, overrides = masks.layer_rates(pruned, 1.0 - target_sparsity, output_rate_scale)
    masks.remove(pruned, masks.select(pruned, "random", rate, seed=seed,
                                      rate_overrides=overrides, block_size=block_size))
    session.compile(pruned)
    history = session.fit(pruned, epochs, callbacks=[UpdatePruningStep()])
    session.record_round(pruned, 1, best_val_epoch=_best_epoch(history))
    return pruned
