"""DLTH: random sparse network transformation (Bai et al., ICLR 2022).

  1. draw a seeded random ticket at the target sparsity;
  2. train the dense network with 0.5 * lambda * ||w * (1 - m)||^2 on the
     weights the ticket removes, lambda growing to lambda_max and then held;
  3. remove those weights in one shot (tfmot event, the plan wins) and
     fine-tune with the mask fixed.

Budget: `epochs` in all, the last `finetune_epochs` (default two thirds) fine-tuning, the rest
regularizing. Lambda's growth, by default, is relative to the regularization
phase: it reaches lambda_max after `growth_fraction` of it, then holds, on
any dataset size. `growth="absolute"` is the published form instead: +delta
every K steps (Bai et al.: 1e-4 every 5 steps), then `hold_epochs` held.
"""

import math

from tf_unilth.sparsity.growth import LinearStepGrowth
from tf_unilth.methods.base import HyperparameterError, RandomTicket, hparam, register_method

DEFAULT_EPOCHS = 30
# The fine-tuning share of the budget: 20 of the 30 epochs (Bai et al.'s split
# as this grid ran it), so a smaller budget keeps the split instead of being
# refused.
FINETUNE_SHARE = 2 / 3


@register_method("dlth")
class DLTH(RandomTicket):
    epochs: int = hparam(None, f"Whole budget: regularization, then finetune_epochs of "
                         f"fine-tuning (default: {DEFAULT_EPOCHS}; with --growth=absolute, "
                         "lambda's growth + hold_epochs + finetune_epochs).", at_least=1)
    finetune_epochs: int = hparam(None, "Fine-tuning epochs after the removal (default: "
                                  "FINETUNE_SHARE of the budget, rounded, leaving at least "
                                  "one regularization epoch: 20 of 30). The removal "
                                  "happens in the fine-tuning fit.", at_least=1)
    growth: str = hparam("relative", "relative: lambda reaches lambda_max after "
                         "growth_fraction of the regularization epochs; absolute: +lambda_delta "
                         "every lambda_every steps (DLTH's published form).",
                         choices=("relative", "absolute"))
    growth_fraction: float = hparam(0.5, "relative growth: share of the regularization phase "
                                    "lambda takes to reach lambda_max (then held).",
                                    above=0, at_most=1)
    lambda_delta: float = hparam(1e-4, "absolute growth: lambda increment (DLTH: 1e-4).",
                                 above=0)
    lambda_every: int = hparam(5, "Steps between lambda increments (DLTH: 5).", at_least=1)
    lambda_max: float = hparam(1.0, "Largest regularization coefficient.", above=0)
    hold_epochs: int = hparam(5, "absolute growth: epochs lambda is held at its maximum "
                              "before the removal.", at_least=0)

    def finetune(self):
        """finetune_epochs, or its default: FINETUNE_SHARE of the budget."""
        if self.finetune_epochs is not None:
            return self.finetune_epochs
        budget = self.epochs or DEFAULT_EPOCHS
        return max(1, min(budget - 1, round(FINETUNE_SHARE * budget)))

    def check(self, target_sparsity):
        super().check(target_sparsity)
        if self.epochs is not None and self.epochs <= self.finetune():
            raise HyperparameterError(
                f"dlth: a budget of {self.epochs} epochs leaves no regularization epoch before "
                f"{self.finetune()} fine-tuning epochs; raise epochs or lower "
                "finetune_epochs.", ["epochs", "finetune_epochs"])

    def plan(self, mask, target_sparsity, steps_per_epoch, output_layers):
        super().plan(mask, target_sparsity, steps_per_epoch, output_layers)
        if self.growth == "relative":
            reg_epochs = (self.epochs or DEFAULT_EPOCHS) - self.finetune()
            increments = max(1, int(self.growth_fraction * reg_epochs * steps_per_epoch)
                             // self.lambda_every)
            curve = LinearStepGrowth(self.lambda_max / increments,
                                                  self.lambda_every, self.lambda_max)
        else:
            curve = LinearStepGrowth(self.lambda_delta, self.lambda_every,
                                                  self.lambda_max)
            reg_epochs = math.ceil(curve.steps_to_max() / steps_per_epoch) + self.hold_epochs
            if self.epochs is not None:  # a budget: regularize first, fine-tune the rest
                reg_epochs = min(reg_epochs, self.epochs - self.finetune())
        reached = curve(reg_epochs * steps_per_epoch)
        return {"epochs": reg_epochs + self.finetune(), "reg_epochs": reg_epochs,
                "finetune_epochs": self.finetune(), "lambda_steps_to_max":
                curve.steps_to_max(), "lambda_reached": reached, "curve": curve.get_config()}

    def run(self, search, model, target_sparsity):
        kit = search.kit
        pruned = search.wrap(model, lambda layer: kit.OneShotSchedule(0.0))
        kit.attach_regularizers(pruned)
        plan = self.plan(kit.get_masks(pruned), target_sparsity, search.data.steps_per_epoch,
                         self.output_layers(pruned))
        search.info(plan={k: v for k, v in plan.items() if k != "curve"})
        if plan["lambda_reached"] < self.lambda_max:
            search.warn(f"dlth: lambda reaches only {plan['lambda_reached']:.4g} of lambda_max "
                        f"{self.lambda_max} in {plan['reg_epochs']} regularization epochs "
                        "(absolute growth); raise --epochs or use --growth=relative.",
                        "lambda_short")
        selector = self.selector()
        rates = selector.allocation.rates(kit.get_masks(pruned), 1.0 - target_sparsity,
                                          self.output_layers(pruned))
        ticket = search.removal(pruned, selector, rates)
        kit.set_selection(pruned, ticket)
        for record in kit.pruned_weights(pruned):  # each layer's share of the removal
            record.wrapper.pruning_schedule.set_sparsity(
                0, float(ticket[record.key].sum()) / ticket[record.key].size)
        search.compile(pruned)

        growth = kit.RegularizerGrowth(LinearStepGrowth(**plan["curve"]), active=True)
        reg_epochs = plan["reg_epochs"]
        search.fit(pruned, reg_epochs, callbacks=[kit.UpdatePruningStep(), growth])
        search.record_round(pruned, 0, lambda_reached=growth.current())

        # One-shot removal at the first fine-tuning step, then the mask is fixed.
        step = kit.current_step(pruned)
        for layer in kit.wrappers(pruned):
            layer.pruning_schedule.start(step)
        growth.stop()
        search.fit(pruned, reg_epochs + self.finetune(), initial_epoch=reg_epochs,
                   callbacks=[kit.UpdatePruningStep()])
        search.record_round(pruned, 1, selection_fidelity=kit.selection_fidelity(pruned))
        return pruned
