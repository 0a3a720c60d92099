"""The random control: a seeded random mask at the target sparsity, trained
from the same initialization with the mask fixed and no regularization.
A winning ticket has to beat this."""

from tf_unilth.methods.base import RandomTicket, hparam, register_method
from tf_unilth.methods.dense import best_epoch


@register_method("random")
class Random(RandomTicket):
    epochs: int = hparam(20, "Training epochs of the random ticket.", at_least=1)

    def run(self, search, model, target_sparsity):
        kit = search.kit
        pruned = search.wrap(model)
        selector = self.selector()
        rates = selector.allocation.rates(kit.get_masks(pruned), 1.0 - target_sparsity,
                                          self.output_layers(pruned))
        kit.remove(pruned, search.removal(pruned, selector, rates))
        search.compile(pruned)
        history = search.fit(pruned, self.epochs, callbacks=[kit.UpdatePruningStep()])
        search.record_round(pruned, 1, best_val_epoch=best_epoch(history))
        return pruned
