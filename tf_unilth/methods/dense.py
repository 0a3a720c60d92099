"""The dense baseline: train the unpruned network for the epoch budget.

With validation data, the weights of the epoch with the best `restore_best`
metric are kept (model selection on validation, never on test); the LTH papers
likewise report the network at its early-stop iteration.
"""

from tf_unilth._compat import keras


def run(session, model, target_sparsity=0.0, epochs=30, restore_best="val_accuracy"):
    del target_sparsity  # the dense network has none
    session.compile(model)
    callbacks = []
    if restore_best and session.data.validation is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=restore_best, patience=epochs + 1, restore_best_weights=True))
    history = session.fit(model, epochs, callbacks=callbacks)
    session.record_round(model, 0, best_val_epoch=_best_epoch(history),
                         restored_epoch=(callbacks[0].best_epoch + 1) if callbacks else None)
    return model


def _best_epoch(history):
    losses = history.history.get("val_loss")
    return int(min(range(len(losses)), key=losses.__getitem__)) + 1 if losses else None
