"""The building blocks under MirroredStrategy over two logical CPU devices."""

import numpy as np

from tf_unilth._compat import tf
from tf_unilth import callbacks, masks, regularizers

from helpers import compile_model, pruned_toy, toy_data


def _replica_values(var):
    return [v.numpy() for v in var.values]


def test_masks_lambda_and_trigger_agree_on_both_replicas(tmp_path):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest configures two logical CPUs"
    strategy = tf.distribute.MirroredStrategy(devices)
    x, y = toy_data(n=256)
    with strategy.scope():
        model = compile_model(pruned_toy(densities=(0.5, 0.2), steps_per_round=4))
        regularizers.attach(model)
    growth = callbacks.RegularizerGrowth(regularizers.PowerGrowth(0.5, steps=8))
    rewind = callbacks.Rewind(str(tmp_path), keep_epochs=2)

    def on_fire(trigger, epoch, logs):
        rewind.rewind_epochs(1)
        step = callbacks.current_step(trigger.model)
        regularizers.set_selection(trigger.model, masks.magnitude_layerwise(trigger.model, 0.5))
        growth.start()
        for layer in masks.pruned_weights(trigger.model):
            layer.wrapper.pruning_schedule.start(step)

    trigger = callbacks.PlateauTrigger(monitor="loss", patience=0, min_delta=100.0,
                                       listeners=[on_fire])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    model.fit(ds, epochs=4, verbose=0,
              callbacks=[callbacks.UpdatePruningStep(), rewind, trigger, growth])
    assert trigger.fired_epoch == 1   # nothing beats min_delta after epoch 0
    assert masks.sparsity(model) == __import__("pytest").approx(0.8, abs=0.01)
    for r in masks.pruned_weights(model):
        m0, m1 = _replica_values(r.mask)
        w0, w1 = _replica_values(r.weight)
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_array_equal(w0, w1)
        assert np.all(w0[m0 == 0] == 0)
    growth = regularizers.growth(model)
    for var in (growth.start_step, growth.lambda_max, growth.rate):
        v0, v1 = _replica_values(var)
        assert v0 == v1
    assert regularizers.current_lambda(model) == 0.5
    for reg in regularizers.regularizers(model).values():
        s0, s1 = _replica_values(reg.selection)
        np.testing.assert_array_equal(s0, s1)
    f0, f1 = _replica_values(trigger.fired)
    assert bool(f0) and bool(f1)
