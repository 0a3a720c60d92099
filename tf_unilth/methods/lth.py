"""LTH: iterative magnitude pruning with rewinding to iteration k.

Frankle & Carbin 2019 (k = 0) and Frankle et al. 2020 (k > 0):
  1. initialize theta_0, train k steps and keep theta_k;
  2. train to the end of the round's budget;
  3. remove `prune_rate` of the surviving weights by magnitude (the output
     layer at half that rate);
  4. rewind the surviving weights, optimizer state and learning-rate step to
     theta_k, keep the mask;
  5. repeat 2-4 until the target sparsity. Every round is a full retraining.

Budget: `epochs` is the whole search, spread evenly over its trainings
(round 0 and every pruning round); or give `epochs_per_round` directly.
"""

import numpy as np

from tf_unilth.methods.base import Selecting, hparam, register_method
from tf_unilth.methods.dense import best_epoch
from tf_unilth.sparsity import Mask, selection

DEFAULT_EPOCHS_PER_ROUND = 20


@register_method("lth")
class LTH(Selecting):
    epochs: int = hparam(None, "Whole budget, spread evenly over the trainings (round 0 "
                         "and every pruning round). Default: epochs_per_round of each.",
                         at_least=1)
    epochs_per_round: int = hparam(None, f"Epochs of each training. Default: "
                                   f"{DEFAULT_EPOCHS_PER_ROUND}, or epochs / trainings when "
                                   "epochs is given.", at_least=1)
    prune_rate: float = hparam(0.2, "Fraction of the surviving weights each round removes.",
                               above=0, below=1)
    rewind_step: int = hparam(0, "Rewind to iteration k (0: the original LTH).", at_least=0)
    rounds: int = hparam(None, "Pruning rounds to run (default: until the target sparsity).",
                         at_least=1)
    max_rounds: int = hparam(60, "Most pruning rounds when running until the target.",
                             at_least=1)

    def plan(self, mask, target_sparsity, steps_per_epoch, output_layers):
        rounds = self.rounds if self.rounds is not None else self._rounds_to(
            mask, target_sparsity, output_layers)
        trainings = rounds + 1
        per_round = self.epochs_per_round
        if per_round is None:
            per_round = DEFAULT_EPOCHS_PER_ROUND if self.epochs is None \
                else self.epochs // trainings
        if per_round < 1 or (self.epochs is not None and per_round * trainings > self.epochs):
            raise ValueError(
                f"lth: a budget of {self.epochs} epochs cannot hold {trainings} trainings (round "
                f"0 and {rounds} pruning rounds to sparsity {target_sparsity}) of "
                f"{max(per_round, 1)} epoch(s); raise --epochs, or give --epochs_per_round, or "
                "raise --prune_rate.")
        if self.rewind_step > per_round * steps_per_epoch:
            raise ValueError(f"lth: rewind_step {self.rewind_step} is past round 0's "
                             f"{per_round * steps_per_epoch} steps; lower --rewind_step.")
        return {"epochs": per_round * trainings, "epochs_per_round": per_round,
                "rounds": rounds}

    def _rounds_to(self, mask, target_sparsity, output_layers):
        """Pruning rounds until `target_sparsity`, simulated on the counts."""
        allocation = self.selector().allocation
        alive = {k: a.size for k, a in mask.items()}
        shapes = {k: a.shape for k, a in mask.items()}
        total = sum(alive.values())
        for done in range(self.max_rounds + 1):
            if 1.0 - sum(alive.values()) / total >= target_sparsity - 1e-9:
                return done
            if done == self.max_rounds:
                break
            current = Mask({k: np.arange(np.prod(shapes[k])).reshape(shapes[k]) < alive[k]
                            for k in alive})
            rates = allocation.fixed_rates(current, self.prune_rate, output_layers)
            before = sum(alive.values())
            if isinstance(rates, dict):  # what remove_lowest will remove, exactly
                minima = allocation.floor.minima(current)
                block = self.selector().block_size
                for k in alive:
                    alive[k] -= selection.removal_count(
                        alive[k], rates[k], selection.block_unit(shapes[k], block), minima[k])
            else:
                n = sum(alive.values())
                removed = selection.removal_count(n, rates)
                for k in alive:  # spread in proportion: only the total matters here
                    alive[k] -= int(round(removed * alive[k] / n))
            if sum(alive.values()) == before:
                break
        raise ValueError(
            f"lth: {self.prune_rate:.0%} a round does not reach sparsity {target_sparsity} "
            f"within {self.max_rounds} rounds (the layers' floors stop it at "
            f"{1 - sum(alive.values()) / total:.4f}); raise --max_rounds or --prune_rate, or "
            "lower --floor_count / --floor_fraction.")

    def run(self, search, model, target_sparsity):
        kit = search.kit
        pruned = search.wrap(model)
        search.compile(pruned)
        outputs = self.output_layers(pruned)
        plan = self.plan(kit.get_masks(pruned), target_sparsity, search.data.steps_per_epoch,
                         outputs)
        search.info(plan=plan)
        selector = self.selector()
        rewind = kit.Rewind(search.checkpoint_dir("rewind"), keep_epochs=1,
                        save_step=self.rewind_step)
        for round_index in range(plan["rounds"] + 1):
            if round_index > 0:
                if self.rounds is None and kit.sparsity(pruned) >= target_sparsity - 1e-9:
                    break
                alive = kit.get_masks(pruned)
                rates = selector.allocation.fixed_rates(alive, self.prune_rate, outputs)
                kit.remove(pruned, search.removal(pruned, selector, rates))
                rewind.rewind_to_step()  # theta_k and the optimizer at step k; masks kept
            history = search.fit(pruned, plan["epochs_per_round"],
                                 callbacks=[kit.UpdatePruningStep(), rewind])
            search.record_round(pruned, round_index, best_val_epoch=best_epoch(history))
        return pruned
