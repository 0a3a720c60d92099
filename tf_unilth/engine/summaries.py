"""What a search shows in TensorBoard, and how its lines reach the terminal.

`Board` writes the search's scalars to `log_dir` at the search's step count,
which only grows: Keras' own TensorBoard callback uses the optimizer's
iteration count, which a rewind puts back, and restarts its epoch axis at
every fit. Written once an epoch (no per-batch hook, no flush in the hot
path):

- `epoch/<metric>` and `epoch/val_<metric>`: Keras' epoch logs;
- `sparsity/total` and `sparsity/<layer>/<i>`: the masks (the per-weight
  sparsity tfmot's `PruningSummaries` writes, at a step that does not go
  back after a rewind, which is why that callback is not reused as is);
- `lambda`: the growing penalty's coefficient, when one is attached;
- `round/index`, `round/sparsity`, `round/val_accuracy`, `round/test_accuracy`
  at each recorded round, and `events/<name>` (trigger fired, rewind, forced
  trigger, ...) when they happen.

`Lines` holds the lines a search prints during a fit and lets them out after
Keras' progress bar has finished its line, so a round record never lands in
the middle of a progress bar.
"""

from tf_unilth._compat import keras, tf
from tf_unilth import masks as masks_lib
from tf_unilth import regularizers
from tf_unilth import wrapper


class Board:
    """The search's TensorBoard writer (see module doc)."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self._writer = None

    def scalars(self, values, step):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for name, value in values.items():
                if value is not None:
                    tf.summary.scalar(name, float(value), step=int(step))

    def epoch(self, model, logs, step):
        values = {f"epoch/{k}": v for k, v in (logs or {}).items()}
        if wrapper.wrappers(model):
            report = masks_lib.sparsity_report(model)
            values["sparsity/total"] = report["sparsity"]
            values.update({f"sparsity/{k}": v["sparsity"] for k, v in report["layers"].items()})
            if regularizers.regularizers(model):
                values["lambda"] = regularizers.current_lambda(model)
        self.scalars(values, step)

    def round(self, record):
        self.scalars({"round/index": record["round"], "round/sparsity": record["sparsity"],
                      "round/val_accuracy": record["val_accuracy"],
                      "round/test_accuracy": record["test_accuracy"]}, record["train_steps"])

    def flush(self):
        if self._writer is not None:
            self._writer.flush()


class WriteEpoch(keras.callbacks.Callback):
    """Writes an epoch to the `Board` at the search's step count (runs after
    the epoch is counted)."""

    def __init__(self, board, steps_fn):
        super().__init__()
        self.board, self.steps_fn = board, steps_fn

    def on_epoch_end(self, epoch, logs=None):
        self.board.epoch(self.model, logs, self.steps_fn())

    def on_train_end(self, logs=None):
        self.board.flush()


class Lines:
    """Prints lines through `printer`; during a fit, after Keras' progress
    output of the epoch (`LetOut`, placed after the progress bar)."""

    def __init__(self, printer):
        self.printer = printer
        self.held = None  # a list while a fit runs

    def __call__(self, line):
        if self.held is None:
            self.printer(line)
        else:
            self.held.append(line)

    def hold(self):
        self.held = []

    def release(self):
        held, self.held = self.held or [], None
        for line in held:
            self.printer(line)


class LetOut(keras.callbacks.Callback):
    """Lets held lines out at the end of each epoch and of the fit."""

    def __init__(self, lines):
        super().__init__()
        self.lines = lines

    def on_epoch_end(self, epoch, logs=None):
        held, self.lines.held = self.lines.held or [], []
        for line in held:
            self.lines.printer(line)

    def on_train_end(self, logs=None):
        self.lines.release()
