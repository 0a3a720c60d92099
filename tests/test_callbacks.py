"""PlateauTrigger and Rewind."""

import gc
import logging

import numpy as np
import pytest

from tf_unilth._compat import keras, tf
from tf_unilth import callbacks, masks

from helpers import compile_model, pruned_toy, toy_data


class _Model:  # the two attributes EarlyStopping's logic touches
    stop_training = False

    def get_weights(self):
        return []


def _feed(trigger, values, key="val_loss"):
    trigger.set_model(_Model())
    trigger.on_train_begin()
    for epoch, v in enumerate(values):
        trigger.on_epoch_end(epoch, {key: v})


def test_trigger_fires_when_early_stopping_would_stop_and_not_before():
    events = []
    trigger = callbacks.PlateauTrigger(patience=2, listeners=[
        lambda t, epoch, logs: events.append((epoch, t.best_epoch))])
    _feed(trigger, [1.0, 0.8, 0.7, 0.71, 0.72, 0.6, 0.5])
    assert events == [(4, 2)]          # 2 epochs without improvement after epoch 2
    assert trigger.fired_epoch == 4 and bool(trigger.fired.numpy())
    assert not trigger.model.stop_training  # it does not stop training
    # Same sequence with EarlyStopping stops at the same epoch: same semantics.
    es = keras.callbacks.EarlyStopping(patience=2)
    es.set_model(_Model())
    es.on_train_begin()
    for epoch, v in enumerate([1.0, 0.8, 0.7, 0.71, 0.72]):
        es.on_epoch_end(epoch, {"val_loss": v})
    assert es.stopped_epoch == 4


def test_trigger_min_delta_start_from_epoch_and_mode():
    t = callbacks.PlateauTrigger(monitor="val_accuracy", patience=1, min_delta=0.05,
                                 start_from_epoch=2)
    _feed(t, [0.1, 0.1, 0.5, 0.52, 0.9], key="val_accuracy")
    assert t.fired_epoch == 3  # +0.02 < min_delta counts as no improvement (mode max)


def test_trigger_can_be_rearmed_and_stop_on_fire():
    fired = []
    t = callbacks.PlateauTrigger(patience=1, listeners=[lambda t, e, l: fired.append(e)])
    _feed(t, [1.0, 1.0, 1.0, 1.0])
    assert fired == [1]  # disarmed after firing
    t.rearm()
    assert not bool(t.fired.numpy())
    for epoch, v in enumerate([0.5, 0.6], start=4):
        t.on_epoch_end(epoch, {"val_loss": v})
    assert fired == [1, 5]
    s = callbacks.PlateauTrigger(patience=0, stop_on_fire=True)
    _feed(s, [1.0, 1.1])
    assert s.model.stop_training


def test_missing_monitor_is_an_error_not_silence():
    x, y = toy_data(n=32)
    model = compile_model(pruned_toy())
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[
            callbacks.UpdatePruningStep(), callbacks.PlateauTrigger(patience=1)])


class _Snapshot(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights, self.slots = {}, {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = [v.numpy().copy() for v in self.model.trainable_variables]
        self.slots[epoch] = {r.key: [s.numpy().copy() for s in
                                     masks.optimizer_slots(self.model.optimizer, r.weight)]
                             for r in masks.pruned_weights(self.model)}


def test_rewind_restores_epoch_e_minus_r_exactly_and_keeps_masks(tmp_path):
    x, y = toy_data(n=64)
    model = compile_model(pruned_toy())
    rewind = callbacks.Rewind(str(tmp_path), keep_epochs=3)
    snap = _Snapshot()
    model.fit(x, y, batch_size=16, epochs=5, verbose=0,
              callbacks=[callbacks.UpdatePruningStep(), rewind, snap])
    assert rewind.saved_epochs == [2, 3, 4]
    masks.remove(model, masks.magnitude_layerwise(model, 0.5))
    keep = masks.get_masks(model)
    rewind.rewind_epochs(2)  # epoch 4 - 2 = 2
    records = {r.key: r for r in masks.pruned_weights(model)}
    for v, expected in zip(model.trainable_variables, snap.weights[2]):
        key = next((k for k, r in records.items() if r.weight is v), None)
        if key is None:   # biases: exact epoch-2 values
            np.testing.assert_array_equal(v.numpy(), expected)
        else:             # surviving weights exact, removed ones 0
            m = keep[key]
            np.testing.assert_array_equal(v.numpy()[m], expected[m])
            assert np.all(v.numpy()[~m] == 0)
    for key, slots in snap.slots[2].items():
        for slot, expected in zip(masks.optimizer_slots(model.optimizer, records[key].weight), slots):
            np.testing.assert_array_equal(slot.numpy()[keep[key]], expected[keep[key]])
            assert np.all(slot.numpy()[~keep[key]] == 0)
    assert all(np.array_equal(keep[k], v) for k, v in masks.get_masks(model).items())
    with pytest.raises(ValueError, match="keep_epochs"):
        rewind.rewind_to_epoch(0)


def test_rewind_to_step_k_and_reset_optimizer(tmp_path):
    x, y = toy_data(n=64)
    model = compile_model(pruned_toy())
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[callbacks.UpdatePruningStep()])
    # Record theta at step 6 (2 batches into the second epoch) by hand.
    seen = {}

    class Grab(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if callbacks.current_step(self.model) == 6:
                seen["w"] = [v.numpy().copy() for v in self.model.trainable_variables]

    rewind = callbacks.Rewind(str(tmp_path), save_step=6, restore_optimizer=False)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[callbacks.UpdatePruningStep(), rewind, Grab()])
    masks.remove(model, masks.magnitude_layerwise(model, 0.3))
    rewind.rewind_to_step()
    keep = masks.get_masks(model)
    records = {id(r.weight): r.key for r in masks.pruned_weights(model)}
    for v, expected in zip(model.trainable_variables, seen["w"]):
        m = keep.get(records.get(id(v)), np.ones(v.shape, bool))
        np.testing.assert_array_equal(v.numpy()[m], expected[m])
    assert all(float(tf.reduce_max(tf.abs(v))) == 0.0 for v in model.optimizer.variables)


def test_rewind_without_step_checkpoint_is_a_clear_error(tmp_path):
    x, y = toy_data(n=32)
    model = compile_model(pruned_toy())
    rewind = callbacks.Rewind(str(tmp_path))
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.UpdatePruningStep(), rewind])
    with pytest.raises(ValueError, match="save_step"):
        rewind.rewind_to_step()


def test_rewind_restore_leaves_no_unrestored_checkpoint_warning(tmp_path, caplog):
    # The checkpoint's save_counter is bookkeeping the restore leaves out on
    # purpose; TF must not warn the user about it at every rewind.
    x, y = toy_data(n=64)
    model = compile_model(pruned_toy())
    rewind = callbacks.Rewind(str(tmp_path), keep_epochs=2)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0,
              callbacks=[callbacks.UpdatePruningStep(), rewind])
    with caplog.at_level(logging.WARNING):
        rewind.rewind_epochs(1)
        gc.collect()
    assert not [r for r in caplog.records if "unrestored" in r.getMessage()
                or "could not be found" in r.getMessage()]


@pytest.mark.parametrize("jit_compile", [True, False])
def test_training_without_the_step_callback_is_an_error_before_any_step(jit_compile):
    # Under XLA tfmot's in-graph assert is compiled away: the check is at trace time.
    x, y = toy_data(n=64)
    model = compile_model(pruned_toy())
    model.compile(model.optimizer, model.loss, jit_compile=jit_compile)
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, model.weights))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[callbacks.UpdatePruningStep()])
