"""LTH: iterative magnitude pruning with rewinding to iteration k.

Frankle & Carbin 2019 (k = 0) and Frankle et al. 2020 (k > 0):
  1. initialize theta_0, train k steps and keep theta_k;
  2. train to the end of the round's budget;
  3. remove `prune_rate` of the surviving weights by magnitude (the output
     layer at half that rate);
  4. rewind the surviving weights, optimizer state and learning-rate step to
     theta_k, keep the mask;
  5. repeat 2-4 until the target sparsity. Every round is a full retraining.
"""

from tf_unilth import masks
from tf_unilth.callbacks import Rewind, UpdatePruningStep
from tf_unilth.methods.base import Selecting, hparam, register_method
from tf_unilth.methods.dense import best_epoch


@register_method("lth")
class LTH(Selecting):
    epochs: int = hparam(20, "Training epochs of each round.")
    prune_rate: float = hparam(0.2, "Fraction of the surviving weights each round removes.")
    rewind_step: int = hparam(0, "Rewind to iteration k (0: the original LTH).")
    rounds: int = hparam(None, "Pruning rounds to run (default: until the target sparsity).")
    max_rounds: int = hparam(60, "Most pruning rounds when running until the target.")

    def run(self, search, model, target_sparsity):
        pruned = search.wrap(model)
        search.compile(pruned)
        selector, output = self.selector(), masks.output_layer(pruned)
        rewind = Rewind(search.checkpoint_dir("rewind"), keep_epochs=1,
                        save_step=self.rewind_step)
        planned = self.rounds if self.rounds is not None else self.max_rounds
        for round_index in range(planned + 1):
            if round_index > 0:
                if self.rounds is None and masks.sparsity(pruned) >= target_sparsity - 1e-9:
                    break
                alive = masks.get_masks(pruned)
                rates = selector.allocation.fixed_rates(alive, self.prune_rate, output)
                masks.remove(pruned, search.removal(pruned, selector, rates))
                rewind.rewind_to_step()  # theta_k and the optimizer at step k; masks kept
            history = search.fit(pruned, self.epochs, callbacks=[UpdatePruningStep(), rewind])
            search.record_round(pruned, round_index, best_val_epoch=best_epoch(history))
        return pruned
