"""UniLTH and UniDLTH (seed 000): plateau, rewind, then extrude and prune.

Stage 1  train dense, no regularization, until `PlateauTrigger(val_loss, P)`
         fires (or the budget left only fits stage 2: the trigger is forced).
Rewind   restore weights and optimizer state of r epochs earlier (r = P: the
         epoch of best val_loss).
Stage 2  R rounds on the geometric density sequence. Each round
           1. selects the weights it removes: UniLTH the smallest magnitudes
              among the survivors, UniDLTH the next chunk of a random ticket
              drawn once at initialization;
           2. grows lambda_max * (t/G)^gamma on them (GrowingRegularizer);
           3. removes them at its last step through tfmot's magnitude event
              (the selection wins; the agreement is the selection fidelity).
Stage 3  fine-tune with the mask fixed until a second plateau (best epoch's
         weights restored, never its masks) or the epoch budget ends.

Use it from `find_ticket`, or in one `model.fit`:

    pruned = unilth.prepare(model, target_sparsity=0.9)
    pruned.compile(...)
    pruned.fit(train, validation_data=val, epochs=E,
               callbacks=unilth.callbacks(pruned, target_sparsity=0.9, epochs=E))
"""

import time

from tf_unilth._compat import keras
from tf_unilth import masks, regularizers, schedules, wrapper
from tf_unilth.callbacks import (PlateauTrigger, RegularizerGrowth, Rewind,
                                 UpdatePruningStep, current_step)


def prepare(model, target_sparsity, rounds=5, strategy=None):
    """Wraps `model` with R-event triggered schedules and growing regularizers."""
    densities = schedules.geometric_densities(target_sparsity, rounds)
    scope = (strategy or model.distribute_strategy).scope()
    with scope:
        pruned = wrapper.prune(model, lambda layer: schedules.TriggeredSchedule.rounds(
            densities, steps_per_round=1))
    regularizers.attach(pruned)
    return pruned


def callbacks(model, target_sparsity, epochs, rounds=5, round_epochs=2, patience=3,
              min_delta=0.0, rewind_epochs=None, growth_steps=None, lambda_max=1.0,
              gamma=2.0, selection="magnitude_layerwise", finetune_patience=3, seed=0,
              random_ticket=False, checkpoint_dir=None, on_round_end=None, block_size=None,
              output_rate_scale=0.5, allocation="uniform"):
    """The callbacks of one UniLTH (or, with random_ticket=True, UniDLTH) fit."""
    rewind_epochs = patience if rewind_epochs is None else rewind_epochs
    rewind = Rewind(checkpoint_dir, keep_epochs=max(rewind_epochs, finetune_patience) + 1)
    growth = RegularizerGrowth(regularizers.PowerGrowth(lambda_max, growth_steps or 1, gamma))
    trigger = PlateauTrigger("val_loss", min_delta=min_delta, patience=patience)
    finetune = PlateauTrigger("val_loss", min_delta=min_delta, patience=finetune_patience,
                              stop_on_fire=True)
    stages = StagedPruning(
        target_sparsity, epochs, trigger, rewind, growth, finetune, rounds=rounds,
        round_epochs=round_epochs, rewind_epochs=rewind_epochs, growth_steps=growth_steps,
        selection=selection, seed=seed, random_ticket=random_ticket,
        on_round_end=on_round_end, block_size=block_size, output_rate_scale=output_rate_scale,
        allocation=allocation)
    return [UpdatePruningStep(), rewind, trigger, stages, growth, finetune]


class StagedPruning(keras.callbacks.Callback):
    """Runs stages 2 and 3 when the plateau trigger fires (see module doc)."""

    def __init__(self, target_sparsity, epochs, trigger, rewind, growth, finetune, *,
                 rounds, round_epochs, rewind_epochs, growth_steps, selection, seed,
                 random_ticket, on_round_end=None, block_size=None, output_rate_scale=0.5,
                 allocation="uniform"):
        super().__init__()
        if round_epochs < 1:
            raise ValueError(f"round_epochs must be >= 1, got {round_epochs}.")
        self.densities = schedules.geometric_densities(target_sparsity, rounds)
        self.epochs, self.rounds, self.round_epochs = epochs, rounds, round_epochs
        self.trigger, self.rewind, self.growth, self.finetune = trigger, rewind, growth, finetune
        self.rewind_epochs, self.growth_steps = rewind_epochs, growth_steps
        self.selection, self.seed, self.random_ticket = selection, seed, random_ticket
        self.block_size, self.output_rate_scale = block_size, output_rate_scale
        if allocation not in ("uniform", "erk"):
            raise ValueError(f"allocation must be 'uniform' or 'erk', got {allocation!r}.")
        self.allocation = allocation
        self.on_round_end = on_round_end or _print_round
        if epochs < rounds * round_epochs + 1:
            raise ValueError(
                f"An epoch budget of {epochs} cannot hold stage 1 plus {rounds} rounds of "
                f"{round_epochs} epochs; raise epochs or lower rounds/round_epochs.")
        trigger.add_listener(self._stage2)
        finetune.add_listener(self._restore_best)
        finetune.armed = False

    def on_train_begin(self, logs=None):
        self.stage, self.round, self.log = 1, 0, []
        self.forced, self.trigger_epoch, self.rewind_epoch = False, None, None
        self._start_time, self._epochs_done = time.perf_counter(), 0
        # UniDLTH's random ticket is drawn once, at initialization.
        self._scores = masks.random_scores(self.model, self.seed) if self.random_ticket else None

    # -- stage 1 -> 2 -------------------------------------------------------
    def _stage2(self, trigger, epoch, logs):
        self.trigger_epoch = epoch
        self.rewind_epoch = epoch - min(self.rewind_epochs, epoch)
        self.rewind.rewind_to_epoch(self.rewind_epoch)
        self.rewind_epoch += 1  # reported 1-based, like Keras' progress bar
        steps_per_epoch = current_step(self.model) - self._epoch_start_step
        round_steps = self.round_epochs * steps_per_epoch
        self.growth.curve.steps = self.growth_steps or max(1, round_steps // 2)
        step = current_step(self.model)
        for layer in wrapper.wrappers(self.model):
            layer.pruning_schedule.set_plan(
                [1.0 - d for d in self.densities],
                [round_steps * (i + 1) for i in range(self.rounds)])
            layer.pruning_schedule.start(step)
        self.stage, self.round = 2, 0
        self._begin_round()

    def _begin_round(self):
        self.round += 1
        selection = "random" if self.random_ticket else self.selection
        if self.allocation == "erk":  # each layer geometrically to its ERK density
            final = masks.erk_densities(self.model, self.densities[-1])
            rate, overrides = masks.allocation_rates(
                self.model, {k: d ** (self.round / self.rounds) for k, d in final.items()})
        elif selection == "magnitude_global":  # one threshold: no per-layer rates
            previous = self.densities[self.round - 2] if self.round > 1 else 1.0
            rate, overrides = masks.rate_between(previous, self.densities[self.round - 1]), None
        else:
            rate, overrides = masks.layer_rates(self.model, self.densities[self.round - 1],
                                                self.output_rate_scale)
        chosen = masks.select(self.model, selection, rate, seed=self.seed, scores=self._scores,
                              rate_overrides=overrides, block_size=self.block_size)
        regularizers.set_selection(self.model, chosen)
        for record in masks.pruned_weights(self.model):  # each layer's share
            schedule = record.wrapper.pruning_schedule
            alive = float(record.mask.numpy().sum()) - float(chosen[record.key].sum())
            schedule.set_sparsity(self.round - 1, 1.0 - alive / chosen[record.key].size)
        self._round_end = (self.trigger_epoch if self.round == 1 else self._round_end) \
            + self.round_epochs
        self.growth.restart()

    # -- per epoch ----------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start_step = current_step(self.model)

    def on_epoch_end(self, epoch, logs=None):
        self._epochs_done += 1
        if self.stage == 1 and self.trigger.armed and \
                self.epochs - (epoch + 1) <= self.rounds * self.round_epochs:
            self.forced = True  # no plateau yet, but only stage 2 fits in the budget
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
        if self.round < self.rounds:
            self._begin_round()
            return
        # Stage 3: the mask is fixed; no more penalty; watch for a second plateau.
        self.growth.stop()
        regularizers.set_selection(self.model, {})
        for layer in wrapper.wrappers(self.model):
            layer.pruning_schedule.freeze()
        self.stage = 3
        self.finetune.rearm()

    _STATE = ("stage", "round", "log", "forced", "trigger_epoch", "rewind_epoch",
              "_round_end", "_epochs_done")

    def get_state(self):
        """Python state for resuming a run (see tf_unilth.resume)."""
        state = {name: getattr(self, name, None) for name in self._STATE}
        state["seconds"] = time.perf_counter() - self._start_time
        return state

    def set_state(self, state):
        for name in self._STATE:
            setattr(self, name, state[name])
        self._start_time = time.perf_counter() - state["seconds"]

    def _restore_best(self, trigger, epoch, logs):
        self.rewind.rewind_to_epoch(trigger.best_epoch)

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


def run_unilth(session, model, target_sparsity, epochs=60, **hparams):
    return _run(session, model, target_sparsity, epochs, random_ticket=False, **hparams)


def run_unidlth(session, model, target_sparsity, epochs=60, **hparams):
    return _run(session, model, target_sparsity, epochs, random_ticket=True, **hparams)


def _run(session, model, target_sparsity, epochs, random_ticket, rounds=5, **hparams):
    if session.data.validation is None:
        raise ValueError("UniLTH/UniDLTH's plateau trigger watches val_loss: give "
                         "validation data (validation_data=..., or a validation split).")
    pruned = prepare(model, target_sparsity, rounds, session.strategy)
    session.compile(pruned)
    base = (session.epochs, session.steps, session.seconds)
    spe = session.data.steps_per_epoch

    def record(model_, info):
        session.record_round(
            model_, info["round"], base[0] + info["epochs"], base[1] + info["epochs"] * spe,
            base[2] + info["seconds"], selection_fidelity=info["selection_fidelity"],
            lambda_max_reached=info["lambda"])

    cbs = callbacks(pruned, target_sparsity, epochs, rounds=rounds,
                    random_ticket=random_ticket, on_round_end=record,
                    checkpoint_dir=session.checkpoint_dir("rewind"), **hparams)
    session.fit(pruned, epochs, callbacks=cbs)
    session.method_info = cbs[3].summary()
    return pruned
