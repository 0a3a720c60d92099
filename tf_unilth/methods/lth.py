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

from tf_unilth import masks, wrapper
from tf_unilth.callbacks import Rewind, UpdatePruningStep
from tf_unilth.methods.dense import _best_epoch


def run(session, model, target_sparsity, epochs=20, prune_rate=0.2, output_rate_scale=0.5,
        rewind_step=0, selection="magnitude_layerwise", rounds=None, max_rounds=60,
        block_size=None):
    with session.strategy.scope():
        pruned = wrapper.prune(model)
    session.compile(pruned)
    output_layer = masks.pruned_weights(pruned)[-1].layer_name
    overrides = {output_layer: prune_rate * output_rate_scale}
    if selection == "magnitude_global":
        overrides = None  # one threshold over all layers has no per-layer rates
    rewind = Rewind(session.checkpoint_dir("rewind"), keep_epochs=1, save_step=rewind_step)
    planned = rounds if rounds is not None else max_rounds
    for round_index in range(planned + 1):
        if round_index > 0:
            if rounds is None and masks.sparsity(pruned) >= target_sparsity - 1e-9:
                break
            masks.remove(pruned, masks.select(pruned, selection, prune_rate,
                                              rate_overrides=overrides, block_size=block_size))
            rewind.rewind_to_step()  # theta_k and the optimizer at step k; masks kept
        history = session.fit(pruned, epochs, callbacks=[UpdatePruningStep(), rewind])
        session.record_round(pruned, round_index, best_val_epoch=_best_epoch(history))
    return pruned

