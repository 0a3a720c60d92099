"""UniLTH and UniDLTH (seed 000): plateau, rewind, then extrude and prune.

Stage 1  train dense, no regularization, until `PlateauTrigger(val_loss, P)`
         fires (or only the rounds and `min_finetune_epochs` still fit in the
         budget: the trigger is forced, and the run says so).
Rewind   restore weights and optimizer state of r epochs earlier (r = P: the
         epoch of best val_loss).
Stage 2  R rounds on the geometric density sequence. Each round
           1. selects the weights it removes: UniLTH the lowest scores (magnitude)
              among the survivors, UniDLTH the next chunk of a random ticket
              drawn once at initialization;
           2. grows lambda_max * (t/G)^gamma on them (GrowingRegularizer);
           3. removes them at its last step through tfmot's magnitude event
              (the plan wins; the agreement is the selection fidelity).
Stage 3  fine-tune with the mask fixed until a second plateau (best epoch's
         weights restored, never its masks) or the epoch budget ends.

Use it from `find_ticket`, or in one `model.fit`:

    pruned = unilth.prepare(model, target_sparsity=0.9)
    pruned.compile(...)
    pruned.fit(train, validation_data=val, epochs=E,
               callbacks=unilth.callbacks(pruned, target_sparsity=0.9, epochs=E))
"""

import dataclasses
import time

from tf_unilth._compat import keras
from tf_unilth import masks, regularizers, schedules, wrapper
from tf_unilth.callbacks import (PlateauTrigger, RegularizerGrowth, Rewind,
                                 UpdatePruningStep, current_step)
from tf_unilth.methods.base import (Method, RandomTicket, Selecting, hparam,
                                    register_method)


@dataclasses.dataclass
class Staged(Method):
    """The hyperparameters of UniLTH's stages, shared by UniDLTH."""
    epochs: int = hparam(60, "Whole epoch budget (stage 1, the rounds and fine-tuning).")
    rounds: int = hparam(5, "Pruning rounds R (geometric densities to the target).")
    round_epochs: int = hparam(2, "Epochs of each pruning round.")
    patience: int = hparam(3, "Plateau trigger patience P (epochs without a better val_loss).")
    min_delta: float = hparam(0.0, "Smallest val_loss decrease that counts as better.")
    rewind_epochs: int = hparam(None, "Rewind r epochs when the trigger fires (default: P, "
                                "the epoch of best val_loss).")
    growth_steps: int = hparam(None, "Steps G for lambda to reach lambda_max (default: half "
                               "a round).")
    lambda_max: float = hparam(1.0, "Largest regularization coefficient (0: no extrusion).")
    gamma: float = hparam(2.0, "Lambda growth exponent: lambda_max * (t/G)^gamma.")
    finetune_patience: int = hparam(3, "Patience of the fine-tuning plateau trigger.")
    min_finetune_epochs: int = hparam(
        5, "Epochs kept for fine-tuning: when only the rounds and these are left, the "
        "plateau trigger is forced (and said so).")

    needs_validation = True

    def check(self, target_sparsity):
        super().check(target_sparsity)
        for name in ("rounds", "round_epochs", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{self.name}: {name} must be >= 1, got {getattr(self, name)} "
                                 f"(flag --{name}).")
        for name in ("patience", "finetune_patience", "min_finetune_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{self.name}: {name} must be >= 0, got {getattr(self, name)} "
                                 f"(flag --{name}).")
        if self.rewind_epochs is not None and self.rewind_epochs < 0:
            raise ValueError(f"{self.name}: rewind_epochs must be >= 0, got "
                             f"{self.rewind_epochs} (flag --rewind_epochs).")
        if self.growth_steps is not None and self.growth_steps < 1:
            raise ValueError(f"{self.name}: growth_steps must be >= 1, got {self.growth_steps} "
                             "(flag --growth_steps).")
        regularizers.PowerGrowth(self.lambda_max, 1, self.gamma)  # its own range checks

    def plan(self, mask, target_sparsity, steps_per_epoch, output_layers):
        super().plan(mask, target_sparsity, steps_per_epoch, output_layers)
        stage2 = self.rounds * self.round_epochs
        shortest = 1 + stage2 + self.min_finetune_epochs
        if self.epochs < shortest:
            raise ValueError(
                f"{self.name}: a budget of {self.epochs} epochs cannot hold stage 1 (at least "
                f"one epoch), {self.rounds} rounds of {self.round_epochs} epochs and "
                f"{self.min_finetune_epochs} fine-tuning epochs ({shortest} in all); raise "
                "--epochs or lower --rounds, --round_epochs or --min_finetune_epochs.")
        return {"epochs": self.epochs, "stage2_epochs": stage2,
                "min_finetune_epochs": self.min_finetune_epochs,
                "latest_trigger_epoch": self.epochs - stage2 - self.min_finetune_epochs}

    def run(self, search, model, target_sparsity):
        if search.data.validation is None:
            raise ValueError("UniLTH/UniDLTH's plateau trigger watches val_loss: give "
                             "validation data (validation_data=..., or a validation split).")
        pruned = self.prepare(model, target_sparsity, search.strategy, search.exclude)
        search.compile(pruned)
        search.info(plan=self.plan(masks.get_masks(pruned), target_sparsity,
                                   search.data.steps_per_epoch, self.output_layers(pruned)))
        base = (search.epochs, search.steps)
        spe = search.data.steps_per_epoch

        def record(model_, info):
            search.record_round(
                model_, info["round"], base[0] + info["epochs"], base[1] + info["epochs"] * spe,
                search.seconds, selection_fidelity=info["selection_fidelity"],
                lambda_max_reached=info["lambda"])

        cbs = self.callbacks(pruned, target_sparsity, on_round_end=record,
                             checkpoint_dir=search.checkpoint_dir("rewind"), batch=search.batch,
                             warn=search.warn, event=search.event)
        search.fit(pruned, self.epochs, callbacks=cbs)
        search.info(**next(cb for cb in cbs if isinstance(cb, StagedPruning)).summary())
        return pruned

    # -- the model.fit route ------------------------------------------------
    def prepare(self, model, target_sparsity, strategy=None, exclude=()):
        """Wraps `model` with R-event triggered schedules and growing regularizers."""
        densities = schedules.geometric_densities(target_sparsity, self.rounds)
        with (strategy or model.distribute_strategy).scope():
            pruned = wrapper.prune(model, lambda layer: schedules.TriggeredSchedule.rounds(
                densities, steps_per_round=1), exclude=exclude)
        regularizers.attach(pruned)
        return pruned

    def callbacks(self, model, target_sparsity, checkpoint_dir=None, on_round_end=None,
                  batch=None, warn=None, event=None):
        """The callbacks of one UniLTH (or UniDLTH) fit of `self.epochs` epochs.
        `batch()` gives the (x, y) batch a gradient criterion is scored on;
        `warn(message, flag)` reports a forced trigger or a skipped fine-tune
        (default: printed); `event(name, value)` marks the trigger and rewind."""
        del model  # every callback finds the model through set_model
        rewind_epochs = self.patience if self.rewind_epochs is None else self.rewind_epochs
        rewind = Rewind(checkpoint_dir,
                        keep_epochs=max(rewind_epochs, self.finetune_patience) + 1)
        growth = RegularizerGrowth(regularizers.PowerGrowth(
            self.lambda_max, self.growth_steps or 1, self.gamma))
        trigger = PlateauTrigger("val_loss", min_delta=self.min_delta, patience=self.patience)
        finetune = PlateauTrigger("val_loss", min_delta=self.min_delta,
                                  patience=self.finetune_patience, stop_on_fire=True)
        stages = StagedPruning(self, target_sparsity, trigger, rewind, growth, finetune,
                               on_round_end=on_round_end, batch=batch, warn=warn, event=event)
        return [UpdatePruningStep(), rewind, trigger, stages, growth, finetune]


@register_method("unilth")
class UniLTH(Selecting, Staged):
    """UniLTH: the removals follow the criterion (magnitude) among the survivors."""


@register_method("unidlth")
class UniDLTH(RandomTicket, Staged):
    """UniDLTH: UniLTH's stages on a random ticket drawn once at initialization."""


class StagedPruning(keras.callbacks.Callback):
    """Runs stages 2 and 3 when the plateau trigger fires (see module doc)."""

    def __init__(self, method, target_sparsity, trigger, rewind, growth, finetune,
                 on_round_end=None, batch=None, warn=None, event=None):
        super().__init__()
        if method.round_epochs < 1:
            raise ValueError(f"round_epochs must be >= 1, got {method.round_epochs}.")
        self.method = method
        self.densities = schedules.geometric_densities(target_sparsity, method.rounds)
        self.selector = method.selector()
        self.trigger, self.rewind, self.growth, self.finetune = trigger, rewind, growth, finetune
        self.rewind_epochs = method.patience if method.rewind_epochs is None \
            else method.rewind_epochs
        self.on_round_end = on_round_end or _print_round
        self.batch = batch
        self.warn = warn or (lambda message, flag: print(f"WARNING: {message}"))
        self.event = event or (lambda name, value=1.0: None)
        self.target_sparsity = target_sparsity
        trigger.add_listener(self._stage2)
        finetune.add_listener(self._restore_best)
        finetune.armed = False

    def on_train_begin(self, logs=None):
        self.stage, self.round, self.log = 1, 0, []
        self.forced, self.trigger_epoch, self.rewind_epoch = False, None, None
        self._start_time, self._epochs_done = time.perf_counter(), 0

    # -- stage 1 -> 2 -------------------------------------------------------
    def _stage2(self, trigger, epoch, logs):
        m = self.method
        self.trigger_epoch = epoch
        self.rewind_epoch = epoch - min(self.rewind_epochs, epoch)
        self.rewind.rewind_to_epoch(self.rewind_epoch)
        self.rewind_epoch += 1  # reported 1-based, like Keras' progress bar
        self.event("trigger_epoch", epoch + 1)
        self.event("rewound_to_epoch", self.rewind_epoch)
        steps_per_epoch = current_step(self.model) - self._epoch_start_step
        round_steps = m.round_epochs * steps_per_epoch
        self.growth.curve.steps = m.growth_steps or max(1, round_steps // 2)
        step = current_step(self.model)
        for layer in wrapper.wrappers(self.model):
            layer.pruning_schedule.set_plan(
                [1.0 - d for d in self.densities],
                [round_steps * (i + 1) for i in range(m.rounds)])
            layer.pruning_schedule.start(step)
        self.stage, self.round = 2, 0
        self._begin_round()

    def _begin_round(self):
        self.round += 1
        alive = masks.get_masks(self.model)
        rates = self.selector.allocation.round_rates(
            alive, self.densities[self.round - 1], self.densities[-1], self.round,
            self.method.rounds, self.method.output_layers(self.model))
        batch = self.batch() if self.batch and self.selector.needs_gradients else None
        chosen = masks.choose(self.model, self.selector, rates, batch)
        regularizers.set_selection(self.model, chosen)
        for record in masks.pruned_weights(self.model):  # each layer's share
            schedule = record.wrapper.pruning_schedule
            left = float(alive[record.key].sum()) - float(chosen[record.key].sum())
            schedule.set_sparsity(self.round - 1, 1.0 - left / chosen[record.key].size)
        self._round_end = (self.trigger_epoch if self.round == 1 else self._round_end) \
            + self.method.round_epochs
        self.growth.restart()

    # -- per epoch ----------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start_step = current_step(self.model)

    def on_epoch_end(self, epoch, logs=None):
        m = self.method
        self._epochs_done += 1
        if self.stage == 1 and self.trigger.armed and \
                m.epochs - (epoch + 1) <= m.rounds * m.round_epochs + m.min_finetune_epochs:
            # No plateau yet, but only the rounds and the kept fine-tuning fit in the budget.
            self.forced = True
            self.warn(f"{m.name}: the plateau trigger did not fire in {epoch + 1} epochs; forced "
                      f"so that the {m.rounds} rounds and {m.min_finetune_epochs} fine-tuning "
                      "epochs fit in the budget (raise --epochs for a real plateau).",
                      "trigger_forced")
            self.trigger.fire(epoch, logs)
        elif self.stage == 2 and epoch == self._round_end:
            self._end_round(epoch, logs)

    def _end_round(self, epoch, logs):
        info = {"round": self.round, "epoch": epoch + 1, "logs": dict(logs or {}),
                "selection_fidelity": wrapper.selection_fidelity(self.model),
                "epochs": self._epochs_done, "seconds": time.perf_counter() - self._start_time,
                "lambda": self.growth.current()}
        self.log.append(info)
        self.on_round_end(self.model, info)
        if self.round < self.method.rounds:
            self._begin_round()
            return
        # Stage 3: the mask is fixed; no more penalty; watch for a second plateau.
        if epoch + 1 >= self.method.epochs:
            self.warn(f"{self.method.name}: no epoch is left for fine-tuning after the last "
                      "round; raise --epochs or --min_finetune_epochs.", "finetune_skipped")
        self.growth.stop()
        regularizers.set_selection(self.model, {})
        for layer in wrapper.wrappers(self.model):
            layer.pruning_schedule.freeze()
        self.stage = 3
        self.finetune.rearm()

    _STATE = ("stage", "round", "log", "forced", "trigger_epoch", "rewind_epoch",
              "_round_end", "_epochs_done")

    def get_state(self):
        """Python state for resuming a run (see tf_unilth.engine.journal)."""
        state = {name: getattr(self, name, None) for name in self._STATE}
        state["seconds"] = time.perf_counter() - self._start_time
        return state

    def set_state(self, state):
        for name in self._STATE:
            setattr(self, name, state[name])
        self._start_time = time.perf_counter() - state["seconds"]

    def _restore_best(self, trigger, epoch, logs):
        self.rewind.rewind_to_epoch(trigger.best_epoch)
        self.event("finetune_restored_epoch", trigger.best_epoch + 1)

    def summary(self):
        return {"trigger_epoch": None if self.trigger_epoch is None else self.trigger_epoch + 1,
                "trigger_forced": self.forced, "stage": self.stage,
                "finetune_stopped_epoch": (self.finetune.fired_epoch + 1
                                           if self.finetune.fired_epoch is not None else None),
                "rewound_to_epoch": self.rewind_epoch}


def _print_round(model, info):
    print(f"round {info['round']} | sparsity {100 * masks.sparsity(model):.2f}% | "
          f"val acc {100 * info['logs'].get('val_accuracy', float('nan')):.2f}% | "
          f"fidelity {info['selection_fidelity']:.3f}")


# ---------------------------------------------------------------------------
# Module-level form of the model.fit route (earlier versions' signatures)

def _method(random_ticket=False, **hparams):
    return (UniDLTH if random_ticket else UniLTH).create(**hparams)


def prepare(model, target_sparsity, rounds=5, strategy=None):
    """Wraps `model` with R-event triggered schedules and growing regularizers."""
    return _method(rounds=rounds).prepare(model, target_sparsity, strategy)


def callbacks(model, target_sparsity, epochs, random_ticket=False, checkpoint_dir=None,
              on_round_end=None, **hparams):
    """The callbacks of one UniLTH (or, with random_ticket=True, UniDLTH) fit;
    `hparams` are UniLTH's hyperparameters (`UniLTH` fields)."""
    method = _method(random_ticket, epochs=epochs, **hparams)
    return method.callbacks(model, target_sparsity, checkpoint_dir, on_round_end)


__all__ = ["UniLTH", "UniDLTH", "StagedPruning", "prepare", "callbacks"]
