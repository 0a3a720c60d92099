"""`Search`: everything a ticket method may use, and nothing else.

A method (`tf_unilth.methods`) decides *what* to train and prune; the search
owns *how*: it wraps models in the strategy's scope (keeping `exclude`d
layers dense), compiles them with the search's loss, metrics and optimizer,
fits them resumably, evaluates them, records rounds and keeps the method's
summary. Internally it is a `Trainer` (compile / fit / evaluate), a `Journal`
(resume after a kill) and a `RoundLog` (records and accounting).

    search.wrap(model, schedule_fn)        -> pruned model (strategy scope, exclude)
    search.compile(model, learning_rate)   -> model
    search.fit(model, epochs, callbacks)   -> History (resumable, NaN-guarded)
    search.evaluate(model, "validation")   -> {"loss", "accuracy"}
    search.record_round(model, i, **extra) -> the round's record (printed, kept)
    search.info(**values)                  -> the method's summary (results.json)
    search.warn(message, flag)             -> a degenerate run said and flagged (strict: error)
    search.checkpoint_dir(name)            -> a directory that survives a restart
    search.data.{train, validation, test, steps_per_epoch}
"""

import dataclasses
import math

import numpy as np

from tf_unilth._compat import static_batch_size, tf
from tf_unilth import data as data_lib
from tf_unilth import distribute
from tf_unilth import kit as kit_lib
from tf_unilth import masks as masks_lib
from tf_unilth import wrapper
from tf_unilth.engine import journal as journal_lib
from tf_unilth.engine import records as records_lib
from tf_unilth.engine import trainer as trainer_lib


@dataclasses.dataclass
class Data:
    """Train / validation / test datasets and the number of batches per epoch."""
    train: tf.data.Dataset
    validation: tf.data.Dataset = None
    test: tf.data.Dataset = None
    steps_per_epoch: int = None

    @classmethod
    def make(cls, train, validation=None, test=None, batch_size=128, seed=0, model=None):
        """From tf.data datasets (batched) or (x, y) numpy pairs. With `model`,
        rank-3 arrays get a channel axis only when the model takes one more
        dimension than they have (images (N, H, W) for a conv net; sequences
        (N, T, C) stay as they are)."""
        if isinstance(train, data_lib.Splits):
            return cls(train.train, train.validation, train.test, train.steps_per_epoch())
        channel = True
        if model is not None and isinstance(train, tuple):
            channel = np.ndim(train[0]) == len(model.inputs[0].shape) - 1
        if isinstance(train, tuple):
            splits = data_lib.from_arrays(
                train, test if test is not None else train, validation=validation,
                validation_size=0, batch_size=batch_size, seed=seed, channel_axis=channel)
            return cls(splits.train, splits.validation,
                       splits.test if test is not None else None, splits.steps_per_epoch())
        if not isinstance(train, tf.data.Dataset):
            raise TypeError("train_data must be a batched tf.data.Dataset, an (x, y) "
                            f"pair of arrays or tf_unilth.data.Splits; got {type(train)}.")
        to_ds = lambda d: (data_lib.from_arrays(d, d, validation_size=0, batch_size=batch_size,  # noqa: E731
                                               shuffle=False, channel_axis=channel).test
                           if isinstance(d, tuple) else d)
        steps = int(train.cardinality().numpy())
        if steps < 0:
            raise ValueError("train_data has unknown or infinite length; give a finite, "
                             "batched dataset (e.g. without .repeat()).")
        return cls(train, to_ds(validation) if validation is not None else None,
                   to_ds(test) if test is not None else None, steps)


# A tf.data dataset of the user's is checked on its first batches only (it may
# be large, and iterating it again would move a seeded reshuffle on).
SCAN_BATCHES = 4


def check_data(data, model, default_loss=True):
    """Raises a clear error, before anything trains, when the data cannot feed
    `model`: inputs of another shape, an unbatched dataset, non-finite inputs,
    or (with the default sparse categorical loss) labels out of range."""
    check = model.inputs[0].shape[1:]
    classes = int(model.outputs[0].shape[-1] or 0)
    for split in ("train", "validation", "test"):
        dataset = getattr(data, split)
        if dataset is None:
            continue
        x_spec = tf.nest.flatten(dataset.element_spec)[0]
        if x_spec.shape.rank == len(check):
            raise ValueError(
                f"The {split} dataset gives single examples of shape {tuple(x_spec.shape)}, "
                f"not batches: the model takes batches of {tuple(check)}. Batch it "
                "(dataset.batch(batch_size)).")
        if x_spec.shape.rank != len(check) + 1 or not check.is_compatible_with(
                x_spec.shape[1:]):
            raise ValueError(
                f"The {split} dataset's inputs have shape {tuple(x_spec.shape[1:])} per example; "
                f"the model takes {tuple(check)}. Reshape the data or build the model for it.")
        found = data_lib.arrays(dataset)
        if found is not None:
            xs, ys = [found[0]], [found[1]]
        elif split == "train":
            continue  # see SCAN_BATCHES
        else:
            xs, ys = [], []
            for x, y in dataset.take(SCAN_BATCHES):
                xs.append(x.numpy())
                ys.append(y.numpy())
        for x in xs:
            if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
                raise ValueError(f"The {split} data has NaN or infinite inputs; clean them "
                                 "before training.")
        if default_loss and classes > 1:
            for y in ys:
                y = np.asarray(y)
                if y.size and (y.min() < 0 or y.max() >= classes):
                    raise ValueError(
                        f"The {split} labels run from {int(y.min())} to {int(y.max())}, but the "
                        f"model has {classes} outputs (labels 0..{classes - 1} for its sparse "
                        "categorical loss). Give the model one output per class, or pass your "
                        "own loss (loss=...).")


def input_spec(train_data):
    """(shape without the batch axis, dtype) of the training inputs, or (None, None)."""
    if isinstance(train_data, data_lib.Splits):
        train_data = train_data.train
    if isinstance(train_data, tuple):
        x = np.asarray(train_data[0])
        return x.shape[1:], x.dtype.name if x.dtype.kind in "iu" else "float32"
    if isinstance(train_data, tf.data.Dataset):
        spec = tf.nest.flatten(train_data.element_spec)[0]
        return tuple(spec.shape[1:]), spec.dtype.name
    return None, None


def global_batch(train_data, batch_size):
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
    return static_batch_size(dataset)


# A round whose validation accuracy is at most chance (1 / classes) plus this
# is a collapse: the network no longer tells the classes apart.
CHANCE_MARGIN = 0.02
# So is a round whose validation loss (the default cross-entropy) is within
# this fraction of a uniform prediction's, ln(classes), below 50% accuracy:
# the network outputs about the same for every input, even when the class it
# leans to lifts the accuracy above CHANCE_MARGIN (a Conv-2 DLTH run at 2%
# density ended at 18.6% and a validation loss of 2.2996, ln 10 = 2.3026).
CHANCE_LOSS_FRACTION = 0.02


class DegenerateTicket(RuntimeError):
    """A strict search stopped at a degenerate state (an emptied layer, a round
    at chance, a forced trigger)."""


class Search:
    """One ticket search (see module doc)."""

    def __init__(self, data, *, optimizer="adam", learning_rate=None, loss=None, metrics=None,
                 strategy=None, exclude=(), verbose=1, log_dir=None, printer=print,
                 callbacks=(), state_dir=None, steps_per_execution="auto", jit_compile="auto",
                 strict=False, planned_steps=None):
        # Data made by tf_unilth.data trains in an order that is a function of
        # (seed, epoch): a resumed search sees the orders of an uninterrupted one.
        data = dataclasses.replace(data, train=data_lib.with_epoch_order(data.train))
        self.data = data
        self.strategy = strategy or tf.distribute.get_strategy()
        self.exclude = tuple(exclude)
        self.print = printer
        self.chief = distribute.is_chief(self.strategy)
        # With state_dir a restarted search resumes; without, snapshots still
        # go to a temporary directory so a diverged fit can be put back.
        self.journal = journal_lib.Journal(
            state_dir, worker=None if self.chief else distribute.task_id(self.strategy))
        try:
            for note in self.journal.notes:
                printer(note)
            # Also a barrier: the chief writes nothing before every worker has
            # copied its state (Journal).
            distribute.check_same(self.strategy, self.journal.progress,
                                  f"the resumable state in {state_dir}")
            self.log = records_lib.RoundLog()
            self.trainer = trainer_lib.Trainer(
                data, self.journal, self.log, optimizer=optimizer, learning_rate=learning_rate,
                loss=loss, metrics=metrics, strategy=self.strategy, verbose=verbose,
                log_dir=log_dir, printer=printer, callbacks=callbacks,
                steps_per_execution=steps_per_execution, jit_compile=jit_compile,
                planned_steps=planned_steps)
        except BaseException:
            self.journal.cleanup()
            raise
        self.print = self.trainer.lines  # held during a fit, out after the progress bar
        self.summary = {}
        self.warnings = []
        self.strict = strict
        self.print(self.trainer.execution.describe())
        if self.journal.resumed:
            self.print(f"Resuming the search kept in {self.journal.directory}: finished fits "
                       "are restored, not retrained.")

    # -- models -------------------------------------------------------------
    @property
    def kit(self):
        """The verbs a method uses on this search's models (`tf_unilth.kits`)."""
        return kit_lib

    def wrap(self, model, schedule_fn=None):
        """`tf_unilth.prune(model, schedule_fn)` in the strategy's scope, keeping
        the search's `exclude`d layers dense."""
        with self.strategy.scope():
            return wrapper.prune(model, schedule_fn, exclude=self.exclude)

    def compile(self, model, learning_rate=None, for_training=True):
        return self.trainer.compile(model, learning_rate, for_training)

    # -- training -----------------------------------------------------------
    def fit(self, model, epochs, callbacks=(), initial_epoch=0, validate=True):
        return self.trainer.fit(model, epochs, callbacks, initial_epoch, validate)

    def evaluate(self, model, split):
        return self.trainer.evaluate(model, split)

    def removal(self, model, selector, rates):
        """The removal set (a Mask) `selector` picks at `rates`; a criterion that
        needs gradients is scored on the first training batch."""
        batch = self.batch() if selector.needs_gradients else None
        return masks_lib.choose(model, selector, rates, batch)

    def batch(self):
        """The first (x, y) batch of the training data."""
        return next(iter(self.data.train))

    def checkpoint_dir(self, name):
        """A directory for a method's own checkpoints that survives a restart
        (without a state_dir, a temporary one removed with the search's
        temporary state). Under multi-worker each worker has its own
        (a non-chief's is temporary, under `<state_dir>/workertemp_<id>`, and
        starts as a copy of the chief's), so a worker reads back only what it
        wrote itself in this attempt, or the chief's files after a restart.
        """
        return self.journal.subdirectory(name)

    # -- records ------------------------------------------------------------
    @property
    def rounds(self):
        return self.log.rounds

    @property
    def epochs(self):
        return self.log.epochs

    @property
    def steps(self):
        return self.log.steps

    @property
    def seconds(self):
        """Training seconds so far (the epoch under way included)."""
        return self.trainer.elapsed()

    def record_round(self, model, round_index, epochs=None, steps=None, seconds=None,
                     **extra):
        """Evaluates the current model and appends (and prints) a round record.

        epochs / steps / seconds are totals from the random initialization to
        the end of this round (the cost of the ticket); they default to the
        search's totals so far. A round an earlier attempt recorded is
        returned as it was recorded."""
        if len(self.log.rounds) < len(self.journal.rounds):
            record = self.journal.rounds[len(self.log.rounds)]
            self.log.rounds.append(record)
            self.print(records_lib.format_round(record) + " (restored)")
            return record
        sparsity = masks_lib.sparsity(model) if wrapper.wrappers(model) else 0.0
        record = self.log.make(round_index, float(sparsity), self.evaluate(model, "validation"),
                               self.evaluate(model, "test"), epochs, steps, seconds, **extra)
        self.log.rounds.append(record)
        self._check_collapse(model, record)
        if not self.trainer.in_fit:
            # Recorded during a fit (UniLTH's rounds), the record is written
            # with that epoch's snapshot, atomically: a kill in between can
            # neither keep a round whose state is lost nor redo a kept one.
            self.journal.save_rounds(self.log.rounds)
        self.print(records_lib.format_round(record))
        if self.trainer.board is not None:
            self.trainer.board.round(record)
        return record

    def info(self, **values):
        """Adds to the method's summary (results.json `method_info`)."""
        self.summary.update(values)
        return self.summary

    def event(self, name, value=1.0):
        """An event of the method (a trigger fired, a rewind), as a TensorBoard
        scalar `events/<name>` at the current step."""
        if self.trainer.board is not None:
            self.trainer.board.scalars({f"events/{name}": value}, self.log.steps)

    def warn(self, message, flag):
        """A degenerate run, said in the output and kept (results.json
        `warnings`, with its `flag`); a strict search raises DegenerateTicket."""
        self.warnings.append({"flag": flag, "message": message})
        self.print(f"WARNING: {message}")
        self.event(flag)
        if self.strict:
            raise DegenerateTicket(f"{message} (strict: the search stops here; its state is "
                                   "kept)")

    def _check_collapse(self, model, record):
        if wrapper.wrappers(model):
            for key in masks_lib.get_masks(model).empty_layers():
                self.warn(f"round {record['round']}: layer {key} has no surviving weight "
                          "(it outputs a constant)", "layer_emptied")
        classes = int(model.outputs[0].shape[-1] or 0)
        accuracy = record["val_accuracy"]
        if classes > 1 and accuracy is not None and accuracy <= 1.0 / classes + CHANCE_MARGIN:
            self.warn(f"round {record['round']}: validation accuracy {accuracy:.2%} is at "
                      f"chance for {classes} classes (the network collapsed)", "chance_accuracy")
        elif classes > 1 and accuracy is not None and accuracy < 0.5 \
                and self.trainer.loss is None and record.get("val_loss") is not None \
                and abs(record["val_loss"] - math.log(classes)) <= \
                CHANCE_LOSS_FRACTION * math.log(classes):
            self.warn(f"round {record['round']}: validation loss {record['val_loss']:.4g} is "
                      f"that of a uniform prediction over {classes} classes (ln {classes} = "
                      f"{math.log(classes):.4g}; accuracy {accuracy:.2%}): the network "
                      "collapsed", "chance_loss")
