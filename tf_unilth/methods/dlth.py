"""DLTH: random sparse network transformation (Bai et al., ICLR 2022).

  1. draw a seeded random ticket at the target sparsity;
  2. train the dense network with 0.5 * lambda * ||w * (1 - m)||^2 on the
     weights the ticket removes, lambda += delta every K steps up to
     lambda_max, then held for `hold_epochs`;
  3. remove those weights in one shot (tfmot event, the selection wins) and
     fine-tune with the mask fixed.
"""

import math

from tf_unilth import masks, regularizers, schedules, wrapper
from tf_unilth.callbacks import RegularizerGrowth, UpdatePruningStep, current_step


def run(session, model, target_sparsity, epochs=None, lambda_delta=1e-4, lambda_every=5,
        lambda_max=1.0, hold_epochs=5, finetune_epochs=20, seed=0, output_rate_scale=0.5,
        block_size=None, allocation="uniform"):
    with session.strategy.scope():
        pruned = wrapper.prune(model, lambda layer: schedules.OneShotSchedule(0.0))
    regularizers.attach(pruned)
    if allocation == "erk":
        rate, overrides = masks.allocation_rates(
            pruned, masks.erk_densities(pruned, 1.0 - target_sparsity))
    else:
        rate, overrides = masks.layer_rates(pruned, 1.0 - target_sparsity, output_rate_scale)
    ticket = masks.select(pruned, "random", rate, seed=seed, rate_overrides=overrides,
                          block_size=block_size)
    regularizers.set_selection(pruned, ticket)
    for record in masks.pruned_weights(pruned):
        record.wrapper.pruning_schedule.set_sparsity(
            0, float(ticket[record.key].sum()) / ticket[record.key].size)
    session.compile(pruned)

    growth = RegularizerGrowth(
        regularizers.LinearStepGrowth(lambda_delta, lambda_every, lambda_max), active=True)
    reg_epochs = math.ceil(growth.curve.steps_to_max() / session.data.steps_per_epoch) + hold_epochs
    if epochs is not None:  # an overall budget: regularize first, fine-tune the rest
        reg_epochs = min(reg_epochs, max(1, epochs - finetune_epochs))
    session.fit(pruned, reg_epochs, callbacks=[UpdatePruningStep(), growth])
    session.record_round(pruned, 0, lambda_reached=growth.current())

    # One-shot removal at the first fine-tuning step, then the mask is fixed.
    step = current_step(pruned)
    for layer in wrapper.wrappers(pruned):
        layer.pruning_schedule.start(step)
    growth.stop()
    session.fit(pruned, reg_epochs + finetune_epochs, initial_epoch=reg_epochs,
                callbacks=[UpdatePruningStep()])
    session.record_round(pruned, 1, selection_fidelity=wrapper.selection_fidelity(pruned))
    return pruned
