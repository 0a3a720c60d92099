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
import itertools
import math
import time

from tf_unilth import kits
from tf_unilth.methods.base import (Method, RandomTicket, Selecting, hparam,
                                    register_method)
from tf_unilth.sparsity import Mask, plans
from tf_unilth.sparsity.growth import PowerGrowth


@dataclasses.dataclass
class Staged(Method):
    """The hyperparameters of UniLTH's stages, shared by UniDLTH."""
    epochs: int = hparam(60, "Whole epoch budget (stage 1, the rounds and fine-tuning).",
                         at_least=1)
    rounds: int = hparam(5, "Pruning rounds R (geometric densities to the target).",
                         at_least=1)
    round_epochs: int = hparam(2, "Epochs of each pruning round.", at_least=1)
    patience: int = hparam(3, "Plateau trigger patience P (epochs without a better val_loss).",
                           at_least=0)
    min_delta: float = hparam(0.0, "Smallest val_loss decrease that counts as better.")
    rewind_epochs: int = hparam(None, "Rewind r epochs when the trigger fires (default: P, "
                                "the epoch of best val_loss).", at_least=0)
    growth_steps: int = hparam(None, "Steps G for lambda to reach lambda_max (default: half "
                               "a round).", at_least=1)
    lambda_max: float = hparam(1.0, "Largest regularization coefficient (0: no extrusion).",
                               at_least=0)
    gamma: float = hparam(2.0, "Lambda growth exponent: lambda_max * (t/G)^gamma.", above=0)
    finetune_patience: int = hparam(3, "Patience of the fine-tuning plateau trigger.",
                                    at_least=0)
    min_finetune_epochs: int = hparam(
        5, "Epochs kept for fine-tuning: when only the rounds and these are left, the "
        "plateau trigger is forced (and said so).", at_least=0)
    round_plan: str = hparam(
        "geometric", "geometric: R rounds of round_epochs on geometric densities; imp: the "
        "same down to cut_below, then IMP-sized cuts (at most max_cut of the survivors) in "
        "rounds of short_round_epochs.", choices=("geometric", "imp"))
    cut_below: float = hparam(0.2, "imp plan: density below which rounds cut at most max_cut.",
                              above=0, below=1)
    max_cut: float = hparam(0.2, "imp plan: largest share of the survivors a round removes "
                            "below cut_below (IMP: 0.2).", above=0, below=1)
    short_round_epochs: int = hparam(1, "imp plan: epochs of each round below cut_below.",
                                     at_least=1)
    lr_schedule: str = hparam(
        "constant", "Learning rate in stages 2-3: constant, or a cosine / linear decay over "
        "each round (back to the base rate at every round's start) and over the "
        "fine-tuning budget. Stage 1 always trains at the constant rate.",
        choices=("constant", "cosine", "linear"))
    weight_decay: float = hparam(
        0.0, "Decoupled weight decay (AdamW's) on the surviving weights, from stage 2 on: "
        "each step multiplies them by 1 - lr * weight_decay.", at_least=0)

    needs_validation = True

    def round_plan_of(self, target_sparsity):
        """[(density after the round, its epochs)] of stage 2."""
        final = 1.0 - target_sparsity
        if self.round_plan == "geometric" or final >= self.cut_below:
            return [(d, self.round_epochs)
                    for d in plans.geometric_densities(target_sparsity, self.rounds)]
        above = [(d, self.round_epochs) for d in plans.geometric_densities(
            1.0 - self.cut_below, self.rounds)]
        cuts = max(1, math.ceil(math.log(final / self.cut_below) / math.log(1.0 - self.max_cut)
                                - 1e-9))
        below = [(self.cut_below * (final / self.cut_below) ** (i / cuts),
                  self.short_round_epochs) for i in range(1, cuts + 1)]
        return above + below

    def plan(self, mask, target_sparsity, steps_per_epoch, output_layers):
        super().plan(mask, target_sparsity, steps_per_epoch, output_layers)
        rounds = self.round_plan_of(target_sparsity)
        stage2 = sum(epochs for _, epochs in rounds)
        shortest = 1 + stage2 + self.min_finetune_epochs
        if self.epochs < shortest:
            raise ValueError(
                f"{self.name}: a budget of {self.epochs} epochs cannot hold stage 1 (at least "
                f"one epoch), {len(rounds)} rounds ({stage2} epochs) and "
                f"{self.min_finetune_epochs} fine-tuning epochs ({shortest} in all); raise "
                "--epochs or lower --rounds, --round_epochs or --min_finetune_epochs.")
        return {"epochs": self.epochs, "rounds": len(rounds), "stage2_epochs": stage2,
                "round_densities": [d for d, _ in rounds],
                "min_finetune_epochs": self.min_finetune_epochs,
                "latest_trigger_epoch": self.epochs - stage2 - self.min_finetune_epochs}

    def run(self, search, model, target_sparsity):
        if search.data.validation is None:
            raise ValueError("UniLTH/UniDLTH's plateau trigger watches val_loss: give "
                             "validation data (validation_data=..., or a validation split).")
        pruned = self.prepare(model, target_sparsity, search.strategy, search.exclude)
        search.compile(pruned)
        search.info(plan=self.plan(search.kit.get_masks(pruned), target_sparsity,
                                   search.data.steps_per_epoch, self.output_layers(pruned)))
        learning_rate = None
        if self.lr_schedule != "constant" or self.weight_decay:
            base = search.kit.learning_rate_value(pruned)
            learning_rate = self.learning_rate(pruned, base)
            search.compile(pruned, learning_rate=learning_rate)
        self.stage_learning_rate = learning_rate  # for a method that trains on after
        base = (search.epochs, search.steps)
        spe = search.data.steps_per_epoch

        def record(model_, info):
            search.record_round(
                model_, info["round"], base[0] + info["epochs"], base[1] + info["epochs"] * spe,
                search.seconds, selection_fidelity=info["selection_fidelity"],
                lambda_max_reached=info["lambda"])

        cbs = self.callbacks(pruned, target_sparsity, on_round_end=record,
                             checkpoint_dir=search.checkpoint_dir("rewind"), batch=search.batch,
                             warn=search.warn, event=search.event,
                             learning_rate=learning_rate)
        search.fit(pruned, self.epochs, callbacks=cbs)
        search.info(**next(cb for cb in cbs if isinstance(cb, StagedPruning)).summary())
        return pruned

    # -- the model.fit route ------------------------------------------------
    def prepare(self, model, target_sparsity, strategy=None, exclude=()):
        """Wraps `model` with triggered schedules (an event per round) and
        growing regularizers."""
        densities = [d for d, _ in self.round_plan_of(target_sparsity)]
        if getattr(self, "remove_at_end", False):
            densities = densities[-1:]  # one removal, after the last round
        kit = kits.of(model)
        pruned = kit.prune(model, lambda layer: kit.TriggeredSchedule.rounds(
            densities, steps_per_round=1), exclude=exclude, strategy=strategy)
        kit.attach_regularizers(pruned)
        return pruned

    def learning_rate(self, model, base):
        """The learning rate to compile `model` (prepared) with when stages 2-3
        use `lr_schedule` or `weight_decay`: a `StageLearningRate` at `base`,
        and the decoupled decay wired into the wrappers (rate 0 in stage 1)."""
        return kits.of(model).stage_learning_rate(model, base, self.weight_decay)

    def callbacks(self, model, target_sparsity, checkpoint_dir=None, on_round_end=None,
                  batch=None, warn=None, event=None, learning_rate=None):
        """The callbacks of one UniLTH (or UniDLTH) fit of `self.epochs` epochs.
        `batch()` gives the (x, y) batch a gradient criterion is scored on;
        `warn(message, flag)` reports a forced trigger or a skipped fine-tune
        (default: printed); `event(name, value)` marks the trigger and rewind;
        `learning_rate` is the model's `learning_rate(...)` schedule, when it
        was compiled with one."""
        kit = kits.of(model)  # every callback finds the model through set_model
        rewind_epochs = self.patience if self.rewind_epochs is None else self.rewind_epochs
        rewind = kit.Rewind(checkpoint_dir,
                            keep_epochs=max(rewind_epochs, self.finetune_patience) + 1)
        growth = kit.RegularizerGrowth(PowerGrowth(
            self.lambda_max, self.growth_steps or 1, self.gamma))
        trigger = kit.PlateauTrigger("val_loss", min_delta=self.min_delta,
                                     patience=self.patience)
        finetune = kit.PlateauTrigger("val_loss", min_delta=self.min_delta,
                                  patience=self.finetune_patience, stop_on_fire=True)
        stages = kit.callback_class(StagedPruning)(self, target_sparsity, trigger, rewind, growth, finetune,
                               on_round_end=on_round_end, batch=batch, warn=warn, event=event,
                               learning_rate=learning_rate)
        return [kit.UpdatePruningStep(), rewind, trigger, stages, growth, finetune]


@register_method("unilth")
class UniLTH(Selecting, Staged):
    """UniLTH: the removals follow the criterion (magnitude) among the survivors."""


@register_method("unidlth")
class UniDLTH(RandomTicket, Staged):
    """UniDLTH: UniLTH's stages on a random ticket drawn once at initialization.

    Its defaults (ERK ticket, removal at the end) won on validation over 3
    seeds against the first version's (`allocation="uniform",
    remove_at_end=False`, the "v1 configuration"; docs/ALGORITHMS.md)."""
    allocation: str = hparam(
        "erk", "Per-layer densities of the random ticket: erk (Erdos-Renyi-Kernel) or "
        "uniform (output layer per --output_rate_scale; the v1 configuration).",
        choices=("uniform", "erk"))
    remove_at_end: bool = hparam(
        True, "DLTH's iterative variant: each round extrudes the next chunk of the ticket "
        "(the penalty covers every chunk so far) and the removal happens once, after the "
        "last round (--noremove_at_end: removal at every round, the v1 configuration).")


REWIND_POINT = "rewind_point"


@register_method("unilth_retrain_k")
class UniLTHRetrain(UniLTH):
    """UniLTH, then its mask retrained LTH-style from the stage-1 rewind point
    (weights and optimizer state at epoch k = the rewind epoch): a row of its
    own, its cost counted in its budget."""
    retrain_epochs: int = hparam(20, "Epochs of the final retraining from the rewind point.",
                                 at_least=1)

    def plan(self, mask, target_sparsity, steps_per_epoch, output_layers):
        plan = super().plan(mask, target_sparsity, steps_per_epoch, output_layers)
        return {**plan, "epochs": plan["epochs"] + self.retrain_epochs,
                "retrain_epochs": self.retrain_epochs}

    def run(self, search, model, target_sparsity):
        kit = search.kit
        pruned = super().run(search, model, target_sparsity)
        rewind = kit.Rewind(search.checkpoint_dir("rewind"))
        rewind.set_model(pruned)
        rewind.restore(REWIND_POINT)  # theta_k and its optimizer state; the mask kept
        if self.stage_learning_rate is not None:  # the retraining's own schedule
            if self.lr_schedule == "constant":
                self.stage_learning_rate.hold()
            else:
                self.stage_learning_rate.begin(
                    kit.current_step(pruned), self.retrain_epochs * search.data.steps_per_epoch,
                    self.lr_schedule)
        search.fit(pruned, self.retrain_epochs, callbacks=[kit.UpdatePruningStep()])
        search.record_round(pruned, len(search.rounds) + 1, retrained_from="rewind_point")
        return pruned


class StagedPruning:
    """Runs stages 2 and 3 when the plateau trigger fires (see module doc).

    The callback logic alone: `kit.callback_class(StagedPruning)` is the
    callback of the model's Keras (tf_keras or Keras 3)."""

    def __init__(self, method, target_sparsity, trigger, rewind, growth, finetune,
                 on_round_end=None, batch=None, warn=None, event=None, learning_rate=None):
        super().__init__()
        if method.round_epochs < 1:
            raise ValueError(f"round_epochs must be >= 1, got {method.round_epochs}.")
        self.method = method
        plan = method.round_plan_of(target_sparsity)
        self.densities = [d for d, _ in plan]
        self.round_epochs = [e for _, e in plan]
        self.geometric = method.round_plan == "geometric" or len(plan) == method.rounds
        self.at_end = bool(getattr(method, "remove_at_end", False))
        self.learning_rate = learning_rate
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

    @property
    def kit(self):
        return kits.of(self.model)

    def on_train_begin(self, logs=None):
        self.stage, self.round, self.log = 1, 0, []
        self.forced, self.trigger_epoch, self.rewind_epoch = False, None, None
        self._start_time, self._epochs_done = time.perf_counter(), 0
        self._steps_per_epoch, self._extruded = None, None

    # -- stage 1 -> 2 -------------------------------------------------------
    def _stage2(self, trigger, epoch, logs):
        m = self.method
        self.trigger_epoch = epoch
        self.rewind_epoch = epoch - min(self.rewind_epochs, epoch)
        self.rewind.rewind_to_epoch(self.rewind_epoch)
        self.rewind.keep(REWIND_POINT)  # theta at the rewind point (a retrain starts there)
        self.rewind_epoch += 1  # reported 1-based, like Keras' progress bar
        self.event("trigger_epoch", epoch + 1)
        self.event("rewound_to_epoch", self.rewind_epoch)
        kit = self.kit
        self._steps_per_epoch = kit.current_step(self.model) - self._epoch_start_step
        ends = list(itertools.accumulate(e * self._steps_per_epoch for e in self.round_epochs))
        sparsities = [1.0 - d for d in self.densities]
        if self.at_end:  # one removal, after the last round
            ends, sparsities = ends[-1:], sparsities[-1:]
        step = kit.current_step(self.model)
        for layer in kit.wrappers(self.model):
            layer.pruning_schedule.set_plan(sparsities, ends)
            layer.pruning_schedule.start(step)
        decay = getattr(self.learning_rate, "decay", None)
        if decay is not None:
            decay.set(m.weight_decay)  # regularization starts with stage 2
        self.stage, self.round = 2, 0
        self._begin_round()

    def _begin_round(self):
        self.round += 1
        i = self.round - 1
        kit = self.kit
        alive = kit.get_masks(self.model)
        if self.at_end and self.round > 1:  # the weights still kept: the plan's survivors
            alive = alive.remove(self._extruded)
        progress = self.round / len(self.densities) if self.geometric else \
            math.log(self.densities[i]) / math.log(self.densities[-1])
        rates = self.selector.allocation.round_rates(
            alive, self.densities[i], self.densities[-1], progress,
            self.method.output_layers(self.model))
        batch = self.batch() if self.batch and self.selector.needs_gradients else None
        chosen = kit.choose_among(self.model, self.selector, rates, alive, batch) \
            if self.at_end else kit.choose(self.model, self.selector, rates, batch)
        if self.at_end:  # every chunk so far is extruded; removed at the end
            self._extruded = chosen if self.round == 1 else Mask({
                k: self._extruded[k] | chosen[k] for k in chosen})
            chosen = self._extruded
        kit.set_selection(self.model, chosen)
        event = 0 if self.at_end else i
        if not self.at_end or self.round == len(self.densities):
            for record in kit.pruned_weights(self.model):  # each layer's share
                schedule = record.wrapper.pruning_schedule
                kept = kit.get_masks(self.model)[record.key]
                left = float(kept.sum()) - float((chosen[record.key] & kept).sum())
                schedule.set_sparsity(event, 1.0 - left / chosen[record.key].size)
        self._round_end = (self.trigger_epoch if self.round == 1 else self._round_end) \
            + self.round_epochs[i]
        round_steps = self.round_epochs[i] * self._steps_per_epoch
        self.growth.curve.steps = self.method.growth_steps or max(1, round_steps // 2)
        self.growth.restart()
        if self.learning_rate is not None and self.method.lr_schedule != "constant":
            self.learning_rate.begin(kit.current_step(self.model), round_steps,
                                     self.method.lr_schedule)

    # -- per epoch ----------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start_step = self.kit.current_step(self.model)

    def on_epoch_end(self, epoch, logs=None):
        m = self.method
        self._epochs_done += 1
        if self.stage == 1 and self.trigger.armed and \
                m.epochs - (epoch + 1) <= sum(self.round_epochs) + m.min_finetune_epochs:
            # No plateau yet, but only the rounds and the kept fine-tuning fit in the budget.
            self.forced = True
            self.warn(f"{m.name}: the plateau trigger did not fire in {epoch + 1} epochs; forced "
                      f"so that the {len(self.round_epochs)} rounds and "
                      f"{m.min_finetune_epochs} fine-tuning epochs fit in the budget (raise "
                      "--epochs for a real plateau).", "trigger_forced")
            self.trigger.fire(epoch, logs)
        elif self.stage == 2 and epoch == self._round_end:
            self._end_round(epoch, logs)

    def _end_round(self, epoch, logs):
        info = {"round": self.round, "epoch": epoch + 1, "logs": dict(logs or {}),
                "selection_fidelity": self.kit.selection_fidelity(self.model),
                "epochs": self._epochs_done, "seconds": time.perf_counter() - self._start_time,
                "lambda": self.growth.current()}
        self.log.append(info)
        self.on_round_end(self.model, info)
        if self.round < len(self.densities):
            self._begin_round()
            return
        # Stage 3: the mask is fixed; no more penalty; watch for a second plateau.
        if epoch + 1 >= self.method.epochs:
            self.warn(f"{self.method.name}: no epoch is left for fine-tuning after the last "
                      "round; raise --epochs or --min_finetune_epochs.", "finetune_skipped")
        kit = self.kit
        self.growth.stop()
        kit.set_selection(self.model, {})
        for layer in kit.wrappers(self.model):
            layer.pruning_schedule.freeze()
        if self.learning_rate is not None and self.method.lr_schedule != "constant":
            left = (self.method.epochs - (epoch + 1)) * self._steps_per_epoch
            self.learning_rate.begin(kit.current_step(self.model), left, self.method.lr_schedule)
        self.stage = 3
        self.finetune.rearm()

    _STATE = ("stage", "round", "log", "forced", "trigger_epoch", "rewind_epoch",
              "_round_end", "_epochs_done", "_steps_per_epoch")

    def get_state(self):
        """Python state for resuming a run (see tf_unilth.engine.journal)."""
        state = {name: getattr(self, name, None) for name in self._STATE}
        state["seconds"] = time.perf_counter() - self._start_time
        if self._extruded is not None:
            state["extruded"] = dict(self._extruded)
        return state

    def set_state(self, state):
        for name in self._STATE:
            setattr(self, name, state.get(name))
        self._start_time = time.perf_counter() - state["seconds"]
        extruded = state.get("extruded")
        self._extruded = None if extruded is None else Mask(extruded)


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
    print(f"round {info['round']} | sparsity {100 * kits.of(model).sparsity(model):.2f}% | "
          f"val acc {100 * info['logs'].get('val_accuracy', float('nan')):.2f}% | "
          f"fidelity {info['selection_fidelity']:.3f}")


# ---------------------------------------------------------------------------
# Module-level form of the model.fit route (earlier versions' signatures)

def _method(random_ticket=False, **hparams):
    return (UniDLTH if random_ticket else UniLTH).create(**hparams)


def prepare(model, target_sparsity, rounds=5, strategy=None, random_ticket=False, **hparams):
    """Wraps `model` with triggered schedules (an event per removal: R, or one
    for UniDLTH's removal at the end) and growing regularizers; pass the same
    `random_ticket` and hyperparameters as to `callbacks`."""
    return _method(random_ticket, rounds=rounds, **hparams).prepare(
        model, target_sparsity, strategy)


def callbacks(model, target_sparsity, epochs, random_ticket=False, checkpoint_dir=None,
              on_round_end=None, **hparams):
    """The callbacks of one UniLTH (or, with random_ticket=True, UniDLTH) fit;
    `hparams` are UniLTH's hyperparameters (`UniLTH` fields)."""
    method = _method(random_ticket, epochs=epochs, **hparams)
    return method.callbacks(model, target_sparsity, checkpoint_dir, on_round_end)


__all__ = ["UniLTH", "UniDLTH", "StagedPruning", "prepare", "callbacks"]
