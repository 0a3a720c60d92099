"""`find_ticket`: one call from a tf_keras model and data to a trained ticket."""

import dataclasses

from tf_unilth._compat import check_model, is_subclassed_model, keras, tf
from tf_unilth import distribute, kits, masks, methods, models, prunable, wrapper
from tf_unilth import search as search_lib


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
    warnings: list = dataclasses.field(default_factory=list)  # degenerate states, flagged
    # Every hyperparameter of the method as it ran (defaults included), so a
    # result says what it came from after a default changes.
    hyperparameters: dict = None
    # Layers with weights that stay dense (nothing to prune, or excluded):
    # [{"layer": path, "class": name, "weights": count}] (results.json "kept_dense").
    kept_dense: list = dataclasses.field(default_factory=list)


def make_method(method, method_args=None, epochs=None):
    """A method instance from a registered name (or an instance) and its
    hyperparameters; `epochs` (if given) sets the method's epoch budget."""
    method_args = dict(method_args or {})
    if epochs is not None:
        method_args["epochs"] = epochs
    if isinstance(method, methods.Method):
        return dataclasses.replace(method, **method_args) if method_args else method
    return methods.get(method).create(**method_args)


def find_ticket(model, method, train_data, validation_data=None, target_sparsity=0.9,
                test_data=None, epochs=None, *, optimizer="adam", learning_rate=None,
                loss=None, metrics=None, exclude=(), batch_size=128, strategy=None, verbose=1,
                log_dir=None, printer=print, callbacks=(), state_dir=None,
                steps_per_execution="auto", jit_compile="auto", strict=False,
                before_training=None, **method_args):
    """Trains `model` into a ticket with a registered method (`methods.names()`).

    `method`: a method name, or a method instance (`methods.get(name)(...)`).
    `train_data` / `validation_data` / `test_data`: batched tf.data datasets or
    (x, y) numpy pairs (batched with `batch_size`). `epochs` is the method's
    epoch budget (per round for LTH). Other keyword arguments are the method's
    hyperparameters (its dataclass fields; see ALGORITHMS.md). `loss` and
    `metrics` default to sparse categorical cross-entropy (from logits unless
    the model ends in a softmax) and accuracy; `optimizer` is a name or a
    tf_keras optimizer (copied for every model the method compiles);
    `learning_rate` defaults to 6e-4 for a name and to the instance's own;
    `exclude` names layers that stay dense. `callbacks` are added to every
    `fit` the method makes. `steps_per_execution` and `jit_compile` ('auto':
    the fast setting where it is exact, see `tf_unilth.engine.execution`) are
    how the training steps run. A degenerate run (an emptied layer, a round at
    chance accuracy, a forced plateau trigger) is printed and listed in
    `warnings`; with `strict` it raises `search.DegenerateTicket` instead.
    `before_training()` is called once everything is checked and the search
    is about to start (the command line records its flags there). With `state_dir`, the search snapshots itself there
    after every epoch; called again with the same arguments and `state_dir` it
    resumes instead of starting over.

    `strategy`: a tf.distribute strategy to train under (default: the current
    one; see `tf_unilth.distribute`). Batches are global (each of the R
    replicas gets batch / R examples; R must divide the batch). Build the
    model in `strategy.scope()`; a model built outside it is copied into it
    (same weights) and the copy is trained. Under multi-worker every worker
    makes the same call; `state_dir` must then be a directory all workers
    share, and only the chief's files in it are the real ones.
    A Keras 3 model (the `keras` package >= 3, any backend) goes to the Keras 3
    search (`tf_unilth.keras3.finder.find_ticket`, docs/KERAS3.md): same
    methods, same arguments (a keras.distribution instead of a strategy).
    """
    if kits.is_keras3(model):
        from tf_unilth.keras3 import finder as keras3_finder  # pylint: disable=import-outside-toplevel
        return keras3_finder.find_ticket(
            model, method, train_data, validation_data, target_sparsity, test_data, epochs,
            optimizer=optimizer, learning_rate=learning_rate, loss=loss, metrics=metrics,
            exclude=exclude, batch_size=batch_size, strategy=strategy, verbose=verbose,
            log_dir=log_dir, printer=printer, callbacks=callbacks, state_dir=state_dir,
            steps_per_execution=steps_per_execution, jit_compile=jit_compile, strict=strict,
            before_training=before_training, **method_args)
    check_model(model)
    chosen = make_method(method, method_args, epochs)
    chosen.check(target_sparsity)
    if chosen.needs_validation and validation_data is None:
        raise ValueError(f"{chosen.name} watches val_loss (its plateau trigger): give "
                         "validation data (validation_data=..., or a validation split).")
    strategy = strategy or tf.distribute.get_strategy()
    global_batch = search_lib.global_batch(train_data, batch_size)
    if strategy.num_replicas_in_sync > 1 and global_batch is not None:
        distribute.check_batch_size(global_batch, strategy)
    if is_subclassed_model(model):
        # tfmot rebuilds a model's graph to wrap it; a subclassed model has
        # none, so it is trained inside a functional model of the data's shape.
        shape, dtype = (None, None) if model.built else search_lib.input_spec(train_data)
        model = models.functional(model, shape, dtype)
        printer(f"The model is a subclassed tf_keras model: training it inside the functional "
                f"model {model.name!r} (input {tuple(model.inputs[0].shape[1:])}); the ticket is "
                "that functional model (its one layer is your model, with the same weights).")
    exclude = tuple(exclude)
    # What is pruned, and what cannot be, is settled before anything trains.
    pruning_plan = prunable.plan(model, exclude)
    if not distribute.created_in_scope(model, strategy):
        printer("The model was built outside the strategy's scope; training a copy built "
                "in it (same weights). Build it in strategy.scope() to train it in place.")
        model = distribute.into_scope(model, strategy)
    if learning_rate is not None and not (isinstance(learning_rate, (int, float))
                                          and learning_rate > 0):
        raise ValueError(f"learning_rate must be a number > 0, got {learning_rate!r} (flag "
                         "--learning_rate).")
    data = search_lib.Data.make(train_data, validation_data, test_data, batch_size=batch_size,
                                model=model)
    search_lib.check_data(data, model, default_loss=loss is None)
    # The method's plan (budget, reachable target) is checked before anything
    # is trained or written.
    planned = chosen.plan(masks.plain_mask(model, exclude), target_sparsity,
                          data.steps_per_epoch,
                          masks.output_layers(model, getattr(chosen, "output_layer", None),
                                              exclude=exclude))
    if pruning_plan.kept:
        printer(prunable.describe_kept(pruning_plan.kept))
    if before_training is not None:
        before_training()
    search = search_lib.Search(
        data, optimizer=optimizer, learning_rate=learning_rate, loss=loss, metrics=metrics,
        strategy=strategy, exclude=exclude, verbose=verbose, log_dir=log_dir, printer=printer,
        callbacks=callbacks, state_dir=state_dir, steps_per_execution=steps_per_execution,
        jit_compile=jit_compile, strict=strict,
        planned_steps=planned["epochs"] * data.steps_per_epoch if planned.get("epochs") else None)
    try:
        trained = chosen.run(search, model, target_sparsity)
        kept = [{"layer": path, "class": cls, "weights": n} for path, cls, n in pruning_plan.kept]
        return dataclasses.replace(finish(search, trained),
                                   hyperparameters=dataclasses.asdict(chosen), kept_dense=kept)
    finally:
        # The lock goes; a temporary state goes too (a state_dir stays, to resume).
        search.journal.cleanup()


def finish(search, trained):
    """Strips the wrappers, evaluates the ticket and summarizes the run."""
    sparsity = float(masks.sparsity(trained)) if wrapper.wrappers(trained) else 0.0
    ticket = wrapper.strip(trained) if wrapper.wrappers(trained) else trained
    search.compile(ticket, for_training=False)  # a plain model: nothing of ours in its config
    val, test = search.evaluate(ticket, "validation"), search.evaluate(ticket, "test")
    final = {"sparsity": sparsity, "test_accuracy": test["accuracy"],
             "test_loss": test["loss"], "val_accuracy": val["accuracy"],
             "val_loss": val["loss"]}
    return TicketResult(ticket, search.rounds, sparsity, final, search.log.totals(),
                        search.summary or None,
                        trained if ticket is not trained else None, list(search.warnings))


def ticket_sparsity(model):
    """Sparsity of a stripped ticket: zeros over the kernels tfmot would prune."""
    return masks.zeros_mask(model).sparsity
