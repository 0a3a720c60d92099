"""`find_ticket`: one call from a tf_keras model and data to a trained ticket."""

import dataclasses
import inspect

import numpy as np

from tf_unilth._compat import check_model, keras, tf
from tf_unilth import data as data_lib
from tf_unilth import distribute, methods, schedules, training, wrapper


@dataclasses.dataclass
class TicketResult:
    """The trained ticket (wrappers stripped, removed weights exactly 0),
    its per-round records and its final sparsity over prunable weights."""
    model: keras.Model
    rounds: list
    sparsity: float
    final: dict
    total: dict
    method_info: dict = None
    pruned_model: keras.Model = None  # the wrapped model, masks included


def find_ticket(model, method, train_data, validation_data=None, target_sparsity=0.9,
                test_data=None, epochs=None, *, optimizer="adam", learning_rate=6e-4,
                batch_size=128, strategy=None, verbose=1, log_dir=None, printer=print,
                callbacks=(), state_dir=None, **method_args):
    """Trains `model` into a ticket with one of `methods.METHODS`.

    `train_data` / `validation_data` / `test_data`: batched tf.data datasets or
    (x, y) numpy pairs (batched with `batch_size`). `epochs` is the method's
    epoch budget (per round for LTH). Other keyword arguments are the method's
    hyperparameters (see ALGORITHMS.md and each method's `run`). `callbacks`
    are added to every `fit` the method makes. With `state_dir`, the search
    snapshots itself there after every epoch; called again with the same
    arguments and `state_dir` it resumes instead of starting over.

    `strategy`: a tf.distribute strategy to train under (default: the current
    one; see `tf_unilth.distribute`). Batches are global (each of the R
    replicas gets batch / R examples; R must divide the batch). Build the
    model in `strategy.scope()`; a model built outside it is copied into it
    (same weights) and the copy is trained. Under multi-worker every worker
    makes the same call; `state_dir` must then be a directory all workers
    share, and only the chief's files in it are the real ones.
    """
    check_model(model)
    run = methods.get(method)
    if method != "dense":
        schedules._check_sparsity(target_sparsity)  # pylint: disable=protected-access
    _check_method_args(method, run, method_args)
    strategy = strategy or tf.distribute.get_strategy()
    global_batch = _global_batch(train_data, batch_size)
    if strategy.num_replicas_in_sync > 1 and global_batch is not None:
        distribute.check_batch_size(global_batch, strategy)
    if not distribute.created_in_scope(model, strategy):
        printer("The model was built outside the strategy's scope; training a copy built "
                "in it (same weights). Build it in strategy.scope() to train it in place.")
        model = distribute.into_scope(model, strategy)
    data = training.Data.make(train_data, validation_data, test_data, batch_size=batch_size)
    session = training.Session(data, optimizer=optimizer, learning_rate=learning_rate,
                               strategy=strategy, verbose=verbose, log_dir=log_dir,
                               printer=printer, callbacks=callbacks, state_dir=state_dir)
    kwargs = dict(method_args)
    if epochs is not None:
        kwargs["epochs"] = epochs
    trained = run(session, model, target_sparsity, **kwargs)
    return finish(session, trained)


def finish(session, trained):
    """Strips the wrappers, evaluates the ticket and summarizes the run."""
    sparsity = training.current_sparsity(trained)
    ticket = wrapper.strip(trained) if wrapper.wrappers(trained) else trained
    session.compile(ticket)
    val, test = session.evaluate(ticket, "validation"), session.evaluate(ticket, "test")
    final = {"sparsity": sparsity, "test_accuracy": test["accuracy"],
             "test_loss": test["loss"], "val_accuracy": val["accuracy"],
             "val_loss": val["loss"]}
    total = {"epochs": session.epochs, "train_steps": session.steps,
             "wall_seconds": session.seconds}
    session.state.cleanup()  # only a temporary state is removed
    return TicketResult(ticket, session.rounds, sparsity, final, total,
                        getattr(session, "method_info", None),
                        trained if ticket is not trained else None)


def _global_batch(train_data, batch_size):
    """The batch size of the training data (arrays: `batch_size`; None if unknown).

    Read from the dataset's structure, never by iterating it: an extra pass
    would advance a seeded reshuffle and change the training order.
    """
    if isinstance(train_data, tuple):
        return batch_size
    dataset = train_data.train if isinstance(train_data, data_lib.Splits) else train_data
    if not isinstance(dataset, tf.data.Dataset):
        return None  # Data.make names the problem
    static = tf.nest.flatten(dataset.element_spec)[0].shape
    if static.rank and static[0] is not None:
        return int(static[0])
    while dataset is not None:  # batch(B) without drop_remainder: B is in the graph
        size = getattr(dataset, "_batch_size", None)
        if size is not None:
            return int(size)
        dataset = getattr(dataset, "_input_dataset", None)
    return None


def _check_method_args(method, run, method_args):
    params = inspect.signature(run).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        from tf_unilth.methods import unilth  # pylint: disable=import-outside-toplevel
        params = {**params, **inspect.signature(unilth.callbacks).parameters}
    allowed = set(params) - {"session", "model", "target_sparsity", "on_round_end",
                             "checkpoint_dir", "random_ticket"}
    unknown = set(method_args) - allowed
    if unknown:
        raise TypeError(f"Method {method!r} has no hyperparameter(s) {sorted(unknown)}; "
                        f"it takes {sorted(allowed)}.")


def ticket_sparsity(model):
    """Sparsity of a stripped ticket: zeros over the kernels tfmot would prune."""
    zeros = total = 0
    for layer in model.layers:
        count = wrapper.prunable_weight_count(layer)
        if not count:
            continue
        for weight in (layer.get_prunable_weights() if hasattr(layer, "get_prunable_weights")
                       else [getattr(layer, n) for n in wrapper.prune_registry.PruneRegistry
                             ._weight_names(layer)]):  # pylint: disable=protected-access
            values = weight.numpy()
            zeros += int(np.sum(values == 0))
            total += values.size
    return zeros / total if total else 0.0

