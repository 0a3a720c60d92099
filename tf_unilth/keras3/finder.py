"""`find_ticket` for a Keras 3 model: the same call and the same `TicketResult`
as `tf_unilth.finder.find_ticket`, through the Keras 3 search and the same
methods (their `run()` is shared; `tf_unilth.kits` gives them the Keras 3 verbs).
"""

import dataclasses

from tf_unilth import methods
from tf_unilth.keras3 import core
from tf_unilth.keras3 import search as search_lib
from tf_unilth.keras3._compat import keras


@dataclasses.dataclass
class TicketResult:
    """As `tf_unilth.finder.TicketResult`: the ticket (a plain Keras 3 model,
    removed weights exactly 0), its rounds, sparsity, final and total records."""
    model: object
    rounds: list
    sparsity: float
    final: dict
    total: dict
    method_info: dict = None
    pruned_model: object = None
    warnings: list = dataclasses.field(default_factory=list)
    hyperparameters: dict = None


def make_method(method, method_args=None, epochs=None):
    method_args = dict(method_args or {})
    if epochs is not None:
        method_args["epochs"] = epochs
    if isinstance(method, methods.Method):
        return dataclasses.replace(method, **method_args) if method_args else method
    return methods.get(method).create(**method_args)


def check_method(method):
    """Refuses, before anything is written or trained, what the Keras 3 path
    does not do yet (docs/KERAS3.md), rather than at the stage that needs it."""
    if getattr(method, "lr_schedule", "constant") != "constant" or getattr(
            method, "weight_decay", 0):
        raise methods.HyperparameterError(
            f"{method.name}: lr_schedule other than constant and weight_decay are not on the "
            "Keras 3 path yet (docs/KERAS3.md); keep lr_schedule='constant' and "
            "weight_decay=0, or use the tf_keras path.", ["lr_schedule", "weight_decay"])
    criterion = method.selector().criterion if hasattr(method, "selector") else None
    backend = keras.backend.backend()
    if criterion is not None and criterion.needs_gradients \
            and backend not in core.GRADIENT_BACKENDS:
        raise methods.HyperparameterError(
            f"{method.name}: its criterion ({type(criterion).__name__}) needs gradients, which "
            f"the Keras 3 path takes on {' and '.join(core.GRADIENT_BACKENDS)} only, not "
            f"{backend}: set KERAS_BACKEND to one of them.", ["criterion"])


def find_ticket(model, method, train_data, validation_data=None, target_sparsity=0.9,
                test_data=None, epochs=None, *, optimizer="adam", learning_rate=None,
                loss=None, metrics=None, exclude=(), batch_size=128, strategy=None,
                distribution=None, verbose=1, log_dir=None, printer=print, callbacks=(),
                state_dir=None, steps_per_execution="auto", jit_compile="auto", strict=False,
                before_training=None, seed=None, **method_args):
    """Trains the Keras 3 `model` into a ticket (see tf_unilth.find_ticket).
    Data: (x, y) numpy pairs or tf_unilth.data.Splits. `distribution`: a
    keras.distribution (e.g. DataParallel), set for the search's duration."""
    core.check_model(model)
    chosen = make_method(method, method_args, epochs)
    chosen.check(target_sparsity)
    check_method(chosen)
    if chosen.needs_validation and validation_data is None and not hasattr(train_data, "info"):
        raise ValueError(f"{chosen.name} watches val_loss (its plateau trigger): give "
                         "validation data (validation_data=..., or a validation split).")
    if strategy is not None:
        raise ValueError("tf.distribute strategies are tf_keras'; on Keras 3 pass "
                         "distribution= (a keras.distribution, e.g. DataParallel).")
    unknown = set(exclude) - {layer.name for layer in model.layers}
    if unknown:
        raise ValueError(f"exclude names layers not in the model: {sorted(unknown)}; its "
                         f"layers: {[layer.name for layer in model.layers]}.")
    if learning_rate is not None and not (isinstance(learning_rate, (int, float))
                                          and learning_rate > 0):
        raise ValueError(f"learning_rate must be a number > 0, got {learning_rate!r} (flag "
                         "--learning_rate).")
    if distribution is not None:
        model = laid_out(model, distribution, printer)
    data = search_lib.Data.make(train_data, validation_data, test_data, batch_size=batch_size,
                                model=model)
    if chosen.needs_validation and data.validation is None:
        raise ValueError(f"{chosen.name} watches val_loss (its plateau trigger): give "
                         "validation data (validation_data=..., or a validation split).")
    search_lib.check_data(data, model, default_loss=loss is None)
    chosen.plan(core.plain_mask(model, exclude), target_sparsity, data.steps_per_epoch,
                core.output_layers(model, getattr(chosen, "output_layer", None),
                                   exclude=exclude))
    if seed is not None:
        keras.utils.set_random_seed(seed)
    search = search_lib.Search(
        data, optimizer=optimizer, learning_rate=learning_rate, loss=loss, metrics=metrics,
        exclude=exclude, verbose=verbose, log_dir=log_dir, printer=printer,
        callbacks=callbacks, state_dir=state_dir, steps_per_execution=steps_per_execution,
        jit_compile=jit_compile, strict=strict, distribution=distribution)
    if before_training is not None:
        before_training()
    previous = keras.distribution.distribution()
    if distribution is not None:
        keras.distribution.set_distribution(distribution)
    try:
        trained = chosen.run(search, model, target_sparsity)
        return dataclasses.replace(finish(search, trained),
                                   hyperparameters=dataclasses.asdict(chosen))
    finally:
        if distribution is not None:
            keras.distribution.set_distribution(previous)
        search.cleanup()


def laid_out(model, distribution, printer=print):
    """`model` with its variables laid out by `distribution`.

    Keras 3 lays a variable out when it is created, under the distribution
    set then: a model built before `set_distribution` has its weights on one
    device, and its first step under DataParallel stops in JAX ("incompatible
    devices for jitted computation"). A functional or Sequential model is
    therefore rebuilt under the distribution with the same weights (the search
    returns a new ticket anyway); a subclassed model cannot be rebuilt from
    its config, so it must be built under the distribution (docs/KERAS3.md)."""
    if type(model).__name__ not in ("Functional", "Sequential") or core.wrappers(model):
        return model
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(distribution)
    try:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
    finally:
        keras.distribution.set_distribution(previous)
    printer(f"{model.name}: rebuilt under {type(distribution).__name__} (same weights), so "
            "that every variable is laid out by it.")
    return copy


def finish(search, trained):
    """Strips the hooks, evaluates the ticket and summarizes the run."""
    hooked = bool(core.wrappers(trained))
    sparsity = float(core.sparsity(trained)) if hooked else 0.0
    ticket = core.strip(trained) if hooked else trained
    search.compile(ticket, for_training=False)
    val, test = search.evaluate(ticket, "validation"), search.evaluate(ticket, "test")
    final = {"sparsity": sparsity, "test_accuracy": test["accuracy"], "test_loss": test["loss"],
             "val_accuracy": val["accuracy"], "val_loss": val["loss"]}
    return TicketResult(ticket, search.rounds, sparsity, final, search.log.totals(),
                        search.summary or None, trained if hooked else None,
                        list(search.warnings))


def ticket_sparsity(model):
    """Sparsity of a stripped Keras 3 ticket over its prunable weights."""
    return core.zeros_mask(model).sparsity
