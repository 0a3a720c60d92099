"""The dense baseline: train the unpruned network for the epoch budget.

With validation data, the weights of the epoch with the best `restore_best`
metric are kept (model selection on validation, never on test); the LTH papers
likewise report the network at its early-stop iteration.
"""

from tf_unilth.methods.base import Method, hparam, register_method


def best_epoch(history):
    """1-based epoch of minimum validation loss (LTH's "early-stop iteration")."""
    losses = history.history.get("val_loss")
    return int(min(range(len(losses)), key=losses.__getitem__)) + 1 if losses else None


@register_method("dense")
class Dense(Method):
    epochs: int = hparam(30, "Training epochs.", at_least=1)
    restore_best: str = hparam("val_accuracy", "Keep the weights of the epoch with the best "
                               "value of this validation metric ('' keeps the last epoch).")

    def run(self, search, model, target_sparsity):
        search.compile(model)
        keep_best = []
        if self.restore_best and search.data.validation is not None:
            keep_best.append(search.kit.EarlyStopping(
                monitor=self.restore_best, patience=self.epochs + 1, restore_best_weights=True))
        history = search.fit(model, self.epochs, callbacks=keep_best)
        search.record_round(model, 0, best_val_epoch=best_epoch(history),
                            restored_epoch=(keep_best[0].best_epoch + 1) if keep_best else None)
        return model

    def check(self, target_sparsity):
        del target_sparsity  # the dense network has none
        self.check_hyperparameters()
