"""The training loop every method shares: compile, fit, evaluate, record rounds.

A `Session` owns one ticket search: the data, how models are compiled, the
step / epoch / wall-time accounting, the per-round records that end up in
results.json, and the resumable state of the search (`resume.RunState`: a run
killed at any point continues where it was). Methods only decide *what* to
train and prune; they never write their own loop.

Under a distribution strategy the session compiles in its scope, and with
multi-worker it keeps the workers in step: each worker's resumable state and
method checkpoints follow TensorFlow's chief / `workertemp_<id>` convention
(see `resume` and `distribute`), every worker checks at start that it resumes
from the same state as the chief, and after every fit that it holds the same
masks and round records.
"""

import dataclasses
import math

import numpy as np

from tf_unilth._compat import check_model, keras, tf
from tf_unilth import data as data_lib
from tf_unilth import distribute
from tf_unilth import masks as masks_lib
from tf_unilth import resume
from tf_unilth import wrapper as wrapper_lib

OPTIMIZERS = ("adam", "sgd", "momentum", "rmsprop")


def make_optimizer(name, learning_rate):
    """A fresh tf_keras optimizer by name (momentum = SGD with Nesterov 0.9)."""
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate)
    if name == "momentum":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    raise ValueError(f"Unknown optimizer {name!r}; known: {list(OPTIMIZERS)}.")


def _outputs_probabilities(model):
    return getattr(model.layers[-1], "activation", None) is keras.activations.softmax


@dataclasses.dataclass
class Data:
    """Train / validation / test datasets and the number of batches per epoch."""
    train: tf.data.Dataset
    validation: tf.data.Dataset = None
    test: tf.data.Dataset = None
    steps_per_epoch: int = None

    @classmethod
    def make(cls, train, validation=None, test=None, batch_size=128, seed=0):
        """From tf.data datasets (batched) or (x, y) numpy pairs."""
        if isinstance(train, data_lib.Splits):
            return cls(train.train, train.validation, train.test, train.steps_per_epoch())
        if isinstance(train, tuple):
            splits = data_lib.from_arrays(
                train, test if test is not None else train, validation=validation,
                validation_size=0, batch_size=batch_size, seed=seed)
            return cls(splits.train, splits.validation,
                       splits.test if test is not None else None, splits.steps_per_epoch())
        if not isinstance(train, tf.data.Dataset):
            raise TypeError("train_data must be a batched tf.data.Dataset, an (x, y) "
                            f"pair of arrays or tf_unilth.data.Splits; got {type(train)}.")
        to_ds = lambda d: (data_lib.from_arrays(d, d, validation_size=0, batch_size=batch_size,  # noqa: E731
                                               shuffle=False).test if isinstance(d, tuple) else d)
        steps = int(train.cardinality().numpy())
        if steps < 0:
            raise ValueError("train_data has unknown or infinite length; give a finite, "
                             "batched dataset (e.g. without .repeat()).")
        return cls(train, to_ds(validation) if validation is not None else None,
                   to_ds(test) if test is not None else None, steps)


class Session:
    """Compiles, trains and evaluates the models of one ticket search."""

    def __init__(self, data, optimizer="adam", learning_rate=6e-4, strategy=None,
                 verbose=1, log_dir=None, printer=print, callbacks=(), state_dir=None):
        self.data = data
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.strategy = strategy or tf.distribute.get_strategy()
        self.verbose = verbose
        self.log_dir = log_dir
        self.print = printer
        self.extra_callbacks = list(callbacks)  # the user's, added to every fit
        self.rounds = []
        self.epochs = 0
        self.steps = 0
        self.seconds = 0.0
        make_optimizer(optimizer, learning_rate)  # fail early on a bad name
        # With state_dir a restarted search resumes; without, snapshots still
        # go to a temporary directory so a diverged fit can be put back.
        self.chief = distribute.is_chief(self.strategy)
        self.state = resume.RunState(
            state_dir, worker=None if self.chief else distribute.task_id(self.strategy))
        # Also a barrier: the chief writes nothing before every worker has
        # copied its state (resume.RunState).
        distribute.check_same(self.strategy, self.state.progress,
                              f"the resumable state in {state_dir}")
        self._fits = 0
        if self.state.resumed:
            self.print(f"Resuming the search kept in {self.state.directory}: finished fits "
                       "are restored, not retrained.")

    def checkpoint_dir(self, name):
        """A directory for a method's own checkpoints that survives a restart.

        None without a state_dir. Under multi-worker each worker has its own
        (a non-chief's is temporary, under `<state_dir>/workertemp_<id>`, and
        starts as a copy of the chief's), so a worker reads back only what it
        wrote itself in this attempt, or the chief's files after a restart.
        """
        return self.state.subdirectory(name)

    def get_state(self):
        return {"epochs": self.epochs, "steps": self.steps, "seconds": self.seconds,
                "rounds": list(self.rounds)}

    def set_state(self, state):
        self.epochs, self.steps = state["epochs"], state["steps"]
        self.seconds, self.rounds = state["seconds"], list(state["rounds"])

    def add_epoch(self, seconds):
        self.epochs += 1
        self.steps += self.data.steps_per_epoch
        self.seconds += seconds

    def compile(self, model, learning_rate=None):
        check_model(model)
        with self.strategy.scope():
            model.compile(
                make_optimizer(self.optimizer, learning_rate or self.learning_rate),
                keras.losses.SparseCategoricalCrossentropy(
                    from_logits=not _outputs_probabilities(model)),
                metrics=["accuracy"])
        return model

    def fit(self, model, epochs, callbacks=(), initial_epoch=0, validate=True):
        """model.fit on the training data, resumable (see `resume`).

        The session counts the epochs, steps and seconds it runs. A fit that a
        previous attempt finished is restored instead of trained; an
        interrupted one continues after its last saved epoch. A loss that stops
        being finite stops training and puts the model back to its last good
        snapshot (FloatingPointError).
        """
        index, self._fits = self._fits, self._fits + 1
        callbacks = list(callbacks) + self.extra_callbacks
        if self.log_dir:
            callbacks.append(keras.callbacks.TensorBoard(self.log_dir, write_graph=False,
                                                         profile_batch=0))
        keras.callbacks.CallbackList(callbacks, model=model)  # set_model on each
        snapshot = self.state.finished_fit(index)
        partial = self.state.partial_fit(index)
        if partial is not None and (partial["stop_training"] or partial["epoch"] + 1 >= epochs):
            snapshot = partial  # it had ended; only its end snapshot was missing
        if snapshot is not None:
            self.state.restore(snapshot, model, callbacks)
            self.set_state(snapshot["session"])
            if snapshot is partial:
                self.state.save(index, model, callbacks, self, partial["history"],
                                partial["epoch"], done=True)
            self.print(f"fit {index + 1}: finished in an earlier attempt; restored.")
            return resume.History(snapshot["history"])
        if partial is not None:
            initial_epoch = partial["epoch"] + 1
            self.set_state(partial["session"])
            self.state.truncate_rounds(len(self.rounds))
            self.print(f"fit {index + 1}: resuming after epoch {initial_epoch}.")
        saver = resume.SaveProgress(self.state, index, callbacks, self, partial)
        checks = [WorkersAgree(self.strategy, callbacks)] \
            if distribute.is_multi_worker(self.strategy) else []
        model.fit(self.data.train, epochs=epochs, initial_epoch=initial_epoch,
                  validation_data=self.data.validation if validate else None,
                  callbacks=callbacks + [keras.callbacks.TerminateOnNaN(), *checks, saver],
                  verbose=self.verbose)
        losses = saver.history.get("loss", [])
        if losses and not math.isfinite(losses[-1]):
            self._diverged(index, model, callbacks, losses[-1])
        self.state.save(index, model, callbacks, self, saver.history,
                        saver.last_epoch if saver.last_epoch is not None else initial_epoch - 1,
                        done=True)
        self.check_workers_agree(model, f"fit {index + 1}")
        return resume.History(saver.history)

    def check_workers_agree(self, model, when):
        """Multi-worker: raises unless every worker holds the same masks, sparsity
        and round records (the plateau trigger and rewinds decided alike)."""
        if not distribute.is_multi_worker(self.strategy):
            return
        digest = masks_digest(model)
        rounds = [(r["round"], r["sparsity"], r["epochs"]) for r in self.rounds]
        distribute.check_same(self.strategy, [digest, rounds, self.epochs, self.steps],
                              f"the masks and rounds after {when}")

    def _diverged(self, index, model, callbacks, loss):
        good = self.state.partial_fit(index) or self.state.last_good()
        if good is None:
            where = "no epoch had finished with a finite loss, so there is no good state"
        else:
            self.state.restore(good, model, callbacks)
            where = (f"the model was put back to its last good state (end of epoch "
                     f"{good['epoch'] + 1}), kept in {self.state.directory}")
        raise FloatingPointError(
            f"Training loss became {loss} (not finite); training stopped and {where}. "
            "Lower the learning rate (or lambda_max) and start again with a new output "
            "directory.")

    def evaluate(self, model, split):
        dataset = getattr(self.data, split)
        if dataset is None:
            return {"loss": None, "accuracy": None}
        loss, accuracy = model.evaluate(dataset, verbose=0)
        return {"loss": float(loss), "accuracy": float(accuracy)}

    def record_round(self, model, round_index, epochs=None, steps=None, seconds=None,
                     **extra):
        """Evaluates the current model and appends (and prints) a round record.

        epochs / steps / seconds are totals from the random initialization to
        the end of this round (the cost of the ticket); they default to the
        session's totals so far."""
        if len(self.rounds) < len(self.state.rounds):  # recorded by an earlier attempt
            record = self.state.rounds[len(self.rounds)]
            self.rounds.append(record)
            self.print(format_round(record) + " (restored)")
            return record
        epochs = self.epochs if epochs is None else epochs
        steps = self.steps if steps is None else steps
        seconds = self.seconds if seconds is None else seconds
        val, test = self.evaluate(model, "validation"), self.evaluate(model, "test")
        record = {"round": round_index, "sparsity": current_sparsity(model),
                  "test_accuracy": test["accuracy"], "test_loss": test["loss"],
                  "val_accuracy": val["accuracy"], "val_loss": val["loss"],
                  "epochs": int(epochs), "train_steps": int(steps),
                  "wall_seconds": float(seconds), **extra}
        self.rounds.append(record)
        self.state.save_rounds(self.rounds)
        self.print(format_round(record))
        return record


class WorkersAgree(keras.callbacks.Callback):
    """Multi-worker: after every epoch, checks that all workers decided alike.

    Compares the masks, whether training stops, and the plateau triggers'
    state (epochs waited, best value and epoch, fired or not) across workers
    (a collective op, so a barrier too); raises on every worker when they
    differ instead of letting the replicas drift apart.
    """

    def __init__(self, strategy, callbacks):
        super().__init__()
        self.strategy = strategy
        self.triggers = [cb for cb in callbacks if isinstance(cb, keras.callbacks.EarlyStopping)]

    def on_epoch_end(self, epoch, logs=None):
        state = [masks_digest(self.model), bool(self.model.stop_training)]
        for cb in self.triggers:
            best = getattr(cb, "best", None)
            state.append([getattr(cb, "wait", None), None if best is None else float(best),
                          getattr(cb, "best_epoch", None), getattr(cb, "armed", None),
                          getattr(cb, "fired_epoch", None)])
        distribute.check_same(self.strategy, state,
                              f"the masks and plateau decisions after epoch {epoch + 1}")


def format_round(r):
    fmt = lambda v: "  n/a " if v is None else f"{100 * v:6.2f}"  # noqa: E731
    return (f"round {r['round']:2d} | sparsity {100 * r['sparsity']:6.2f}% | "
            f"val acc {fmt(r['val_accuracy'])}% | test acc {fmt(r['test_accuracy'])}% | "
            f"{r['epochs']:3d} epochs {r['train_steps']:7d} steps | {r['wall_seconds']:7.1f} s")


def masks_digest(model, replica=0):
    """A hex digest of the model's masks (of one local replica's copy), or None.

    Equal digests on every replica and worker mean they pruned the same weights.
    """
    if not wrapper_lib.wrappers(model):
        return None
    parts = []
    for record in masks_lib.pruned_weights(model):
        mask = record.mask
        values = getattr(mask, "values", None)
        mask = values[replica] if values is not None else mask
        parts.append(record.key.encode() + (mask.numpy() > 0.5).tobytes())
    return f"{distribute.fingerprint(b'|'.join(parts)):014x}"


def replica_masks_digests(model):
    """`masks_digest` of each local replica's copy of the masks."""
    if not wrapper_lib.wrappers(model):
        return []
    mask = masks_lib.pruned_weights(model)[0].mask
    count = len(getattr(mask, "values", [mask]))
    return [masks_digest(model, i) for i in range(count)]


def current_sparsity(model):
    if not wrapper_lib.wrappers(model):
        return 0.0
    return float(masks_lib.sparsity(model))
