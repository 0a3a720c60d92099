"""The dense baseline: train the unpruned network for the epoch budget."""


def run(session, model, target_sparsity=0.0, epochs=20):
    del target_sparsity  # the dense network has none
    session.compile(model)
    history = session.fit(model, epochs)
    session.record_round(model, 0, best_val_epoch=_best_epoch(history))
    return model


def _best_epoch(history):
    losses = history.history.get("val_loss")
    return int(min(range(len(losses)), key=losses.__getitem__)) + 1 if losses else None
