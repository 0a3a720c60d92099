"""DLTH: random sparse network transformation (Bai et al., ICLR 2022).

  1. draw a seeded random ticket at the target sparsity;
  2. train the dense network with 0.5 * lambda * ||w * (1 - m)||^2 on the
     weights the ticket removes, lambda += delta every K steps up to
     lambda_max, then held for `hold_epochs`;
  3. remove those weights in one shot (tfmot event, the plan wins) and
     fine-tune with the mask fixed.
"""

import math

from tf_unilth import masks, regularizers, schedules, wrapper
from tf_unilth.callbacks import RegularizerGrowth, UpdatePruningStep, current_step
from tf_unilth.methods.base import RandomTicket, hparam, register_method


@register_method("dlth")
class DLTH(RandomTicket):
    epochs: int = hparam(None, "Whole budget: regularization first, fine-tuning the rest "
                         "(default: lambda's growth + hold_epochs, then finetune_epochs).")
    lambda_delta: float = hparam(1e-4, "Lambda increment (DLTH: 1e-4).")
    lambda_every: int = hparam(5, "Steps between lambda increments (DLTH: 5).")
    lambda_max: float = hparam(1.0, "Largest regularization coefficient.")
    hold_epochs: int = hparam(5, "Epochs lambda is held at its maximum before the removal.")
    finetune_epochs: int = hparam(20, "Fine-tuning epochs after the removal.")

    def run(self, search, model, target_sparsity):
        pruned = search.wrap(model, lambda layer: schedules.OneShotSchedule(0.0))
        regularizers.attach(pruned)
        selector = self.selector()
        rates = selector.allocation.rates(masks.get_masks(pruned), 1.0 - target_sparsity,
                                          masks.output_layer(pruned))
        ticket = search.removal(pruned, selector, rates)
        regularizers.set_selection(pruned, ticket)
        for record in masks.pruned_weights(pruned):  # each layer's share of the removal
            record.wrapper.pruning_schedule.set_sparsity(
                0, float(ticket[record.key].sum()) / ticket[record.key].size)
        search.compile(pruned)

        growth = RegularizerGrowth(regularizers.LinearStepGrowth(
            self.lambda_delta, self.lambda_every, self.lambda_max), active=True)
        reg_epochs = math.ceil(growth.curve.steps_to_max() / search.data.steps_per_epoch) \
            + self.hold_epochs
        if self.epochs is not None:  # an overall budget: regularize first, fine-tune the rest
            reg_epochs = min(reg_epochs, max(1, self.epochs - self.finetune_epochs))
        search.fit(pruned, reg_epochs, callbacks=[UpdatePruningStep(), growth])
        search.record_round(pruned, 0, lambda_reached=growth.current())

        # One-shot removal at the first fine-tuning step, then the mask is fixed.
        step = current_step(pruned)
        for layer in wrapper.wrappers(pruned):
            layer.pruning_schedule.start(step)
        growth.stop()
        search.fit(pruned, reg_epochs + self.finetune_epochs, initial_epoch=reg_epochs,
                   callbacks=[UpdatePruningStep()])
        search.record_round(pruned, 1, selection_fidelity=wrapper.selection_fidelity(pruned))
        return pruned
