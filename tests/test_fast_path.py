"""The fast path: multi-step execution and XLA change nothing a search decides."""

import numpy as np
import pytest

import tf_unilth
from tf_unilth._compat import keras, tf
from tf_unilth import callbacks, masks, wrapper
from tf_unilth.engine.execution import AUTO_STEPS_PER_EXECUTION, AUTO_XLA_MIN_STEPS, Execution

from helpers import Recorder, StartSchedulesAt, compile_model, toy_data, toy_model


def _dataset(n=256, batch=32):
    x, y = toy_data(n=n)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _planned(steps_per_execution, jit_compile):
    model = tf_unilth.prune(toy_model(), lambda layer: tf_unilth.TriggeredSchedule(
        [0.3, 0.5, 0.7], [3, 9, 11]))
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=steps_per_execution, jit_compile=jit_compile)
    model.fit(_dataset(), epochs=3, verbose=0,
              callbacks=[callbacks.UpdatePruningStep(), StartSchedulesAt(0)])
    return model


@pytest.mark.parametrize("steps_per_execution,jit_compile", [(5, False), (5, True), (1, True)])
def test_pruning_events_happen_at_the_planned_steps(steps_per_execution, jit_compile):
    # 8 batches an epoch; the plan starts after epoch 0 (step 8): events at
    # 8 + 3, 8 + 9, 8 + 11, none a multiple of the 5-step chunks.
    reference = _planned(1, False)
    fast = _planned(steps_per_execution, jit_compile)
    assert wrapper.event_steps(reference) == [11, 17, 19]
    assert wrapper.event_steps(fast) == [11, 17, 19]
    assert masks.get_masks(fast) == masks.get_masks(reference)
    assert masks.sparsity(fast) == pytest.approx(0.7, abs=0.01)


def test_the_step_k_checkpoint_is_taken_at_k_when_chunks_do_not_divide_k(tmp_path):
    k = 7
    seen = {}

    class AtK(keras.callbacks.Callback):  # per step (steps_per_execution = 1)
        def on_train_batch_end(self, batch, logs=None):
            if callbacks.current_step(self.model) == k:
                seen["theta_k"] = [v.numpy().copy() for v in self.model.trainable_variables]

    def train(spe, extra):
        model = compile_model(tf_unilth.prune(toy_model()))
        model.compile(model.optimizer, model.loss, steps_per_execution=spe)
        rewind = callbacks.Rewind(str(tmp_path / f"spe{spe}"), save_step=k)
        model.fit(_dataset(), epochs=2, verbose=0,
                  callbacks=[callbacks.UpdatePruningStep(), rewind] + extra)
        return model, rewind

    train(1, [AtK()])
    model, rewind = train(5, [])
    assert int(model._steps_per_execution.numpy()) == 5  # the chunk length is put back
    rewind.rewind_to_step()
    for got, want in zip(model.trainable_variables, seen["theta_k"]):
        np.testing.assert_array_equal(got.numpy(), want)


def test_removed_weights_and_their_slots_stay_zero_at_every_step_under_xla():
    x, y = toy_data(n=128)
    model = tf_unilth.prune(toy_model(), lambda layer: tf_unilth.TriggeredSchedule.rounds(
        [0.6, 0.3, 0.1], steps_per_round=3))
    model.compile(keras.optimizers.Adam(1.0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    rec = Recorder()  # a batch hook: steps_per_execution 1, XLA on
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=3, verbose=0,
              callbacks=[callbacks.UpdatePruningStep(), StartSchedulesAt(0), rec])
    assert masks.sparsity(model) == pytest.approx(0.9, abs=0.01)
    for earlier, later in zip(rec.batches, rec.batches[1:]):
        for (_, m_prev), (w, m) in zip(earlier, later):
            assert np.all(m <= m_prev) and np.all(w[m == 0] == 0.0)
    for r in masks.pruned_weights(model):
        for slot in masks.optimizer_slots(model.optimizer, r.weight):
            assert np.all(slot.numpy()[r.mask.numpy() == 0] == 0.0)


def test_auto_settings_and_their_reasons(tmp_path):
    one = tf.distribute.get_strategy()
    auto = Execution.resolve(strategy=one, steps_per_epoch=917)
    assert (auto.steps_per_execution, auto.jit_compile) == (AUTO_STEPS_PER_EXECUTION, True)
    assert Execution.resolve(strategy=one, steps_per_epoch=12).steps_per_execution == 12
    hooked = Execution.resolve(strategy=one, steps_per_epoch=917, callbacks=[Recorder()])
    assert hooked.steps_per_execution == 1 and "Recorder" in hooked.describe()
    mirrored = tf_unilth.distribute.make_strategy("mirrored", cpu_devices=2)
    distributed = Execution.resolve(strategy=mirrored, steps_per_epoch=917)
    assert not distributed.jit_compile and "MirroredStrategy" in distributed.describe()
    assert distributed.steps_per_execution == AUTO_STEPS_PER_EXECUTION
    # No GPU here: auto XLA stays on for a dense model, goes off for a
    # convolutional one (wrapped or not); an explicit True is kept.
    conv = tf_unilth.models.build("conv2", (28, 28, 1), 10, seed=0)
    dense = tf_unilth.models.build("lenet300_100", (28, 28, 1), 10, seed=0)
    assert auto.for_model(dense).jit_compile
    assert "XLA on" in auto.for_model(dense).describe() and "XLA off" not in auto.describe()
    for model in (conv, tf_unilth.prune(conv)):
        off = auto.for_model(model)
        assert not off.jit_compile and "convolutions" in off.describe()
    assert Execution.resolve(jit_compile=True, strategy=one).for_model(conv).jit_compile
    # A search planned too short to repay the compilation runs without XLA
    # (said), unless XLA is asked for; from AUTO_XLA_MIN_STEPS on it compiles.
    short = Execution.resolve(strategy=one, steps_per_epoch=50,
                              planned_steps=AUTO_XLA_MIN_STEPS - 1)
    assert not short.for_model(dense).jit_compile and "too few" in short.describe()
    assert Execution.resolve(strategy=one, steps_per_epoch=50,
                             planned_steps=AUTO_XLA_MIN_STEPS).for_model(dense).jit_compile
    assert Execution.resolve(jit_compile=True, strategy=one, planned_steps=10).jit_compile
    for bad in (0, 2.5, "many", True):
        with pytest.raises(ValueError, match="steps_per_execution must be 'auto' or an int"):
            Execution.resolve(bad)
    with pytest.raises(ValueError, match="jit_compile must be 'auto', True or False"):
        Execution.resolve(jit_compile="yes")


def test_a_search_has_no_per_batch_hook_and_evaluates_nothing_twice(monkeypatch):
    hooks, evaluations = [], []
    init, evaluate = keras.callbacks.CallbackList.__init__, keras.Model.evaluate

    def spy_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if self.model is not None:
            hooks.append(self._should_call_train_batch_hooks)

    def spy_evaluate(self, *args, **kwargs):
        evaluations.append(1)
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(keras.callbacks.CallbackList, "__init__", spy_init)
    monkeypatch.setattr(keras.Model, "evaluate", spy_evaluate)
    x, y = toy_data(n=240)
    said = []
    result = tf_unilth.find_ticket(
        toy_model(), "lth", (x[:160], y[:160]), (x[160:200], y[160:200]),
        test_data=(x[200:], y[200:]), target_sparsity=0.5, epochs_per_round=2, prune_rate=0.5,
        rewind_step=3, batch_size=16, verbose=0, printer=said.append)
    # 3 trainings (round 0 and 2 pruned rounds) x 2 epochs x 10 steps: too
    # short for XLA, which `auto` says.
    assert any("Execution: 10 step(s) per call, XLA off (jit_compile=False: 60 planned steps "
               "are too few" in s for s in said), said
    # Round 0 takes theta_k (a batch hook until step 3); no other fit has one.
    fits = [h for h in hooks[1:] if h is not None]
    assert hooks[0] is True and fits and not any(fits[1:]), hooks
    # Validation comes from Keras' epoch logs and the final ticket is the last
    # round's model: Keras validates once an epoch, the search adds one test
    # evaluation per round and nothing else.
    assert len(result.rounds) == 3
    assert len(evaluations) == result.total["epochs"] + len(result.rounds)
    assert result.final["test_accuracy"] == result.rounds[-1]["test_accuracy"]
    assert result.final["val_accuracy"] == result.rounds[-1]["val_accuracy"]
