"""GrowingRegularizer: penalty on the selected weights only, growth curves."""

import numpy as np
import pytest

from tf_unilth._compat import keras, tf
from tf_unilth import callbacks, masks, regularizers

from helpers import compile_model, pruned_toy, toy_data


def test_penalty_is_half_lambda_sum_of_squares_of_selected_weights():
    reg = regularizers.GrowingRegularizer((3, 2), lambda_value=0.4)
    w = tf.constant([[1.0, -2.0], [3.0, 0.5], [-1.5, 2.5]])
    sel = np.array([[1, 0], [0, 1], [1, 1]], bool)
    assert float(reg(w)) == 0.0  # nothing selected yet
    reg.select(sel)
    expected = 0.5 * 0.4 * np.sum((w.numpy() * sel) ** 2)
    assert float(reg(w)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="shape"):
        reg.select(np.ones((2, 3)))


def test_attach_to_a_built_wrapped_model_adds_its_loss_and_serializes():
    model = pruned_toy()
    model(tf.zeros((1, 20)))  # built already
    regs = regularizers.attach(model)
    assert set(regs) == {"fc1/0", "fc2/0", "output/0"}
    assert regularizers.attach(model) == regs  # idempotent
    sel = masks.magnitude_layerwise(model, 0.3)
    regularizers.set_selection(model, sel)
    regularizers.set_lambda(model, 2.0)
    weights = masks.get_weights(model)
    expected = sum(0.5 * 2.0 * np.sum((weights[k] * sel[k]) ** 2) for k in sel)
    assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-5)
    config = regs["fc1/0"].get_config()
    again = regularizers.GrowingRegularizer.from_config(config)
    assert again.shape == regs["fc1/0"].shape
    assert isinstance(keras.regularizers.deserialize(keras.regularizers.serialize(again)),
                      regularizers.GrowingRegularizer)


def test_regularized_selected_weights_shrink_and_others_do_not():
    x, y = toy_data(n=128)
    model = compile_model(pruned_toy(), lr=1e-2)
    regularizers.attach(model)
    sel = masks.magnitude_layerwise(model, 0.5)
    # Regularize the *largest* half to prove the penalty, not magnitude, does it.
    big = {k: ~v for k, v in sel.items()}
    regularizers.set_selection(model, big)
    regularizers.set_lambda(model, 5.0)
    before = masks.get_weights(model)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[callbacks.UpdatePruningStep()])
    after = masks.get_weights(model)
    for k in big:
        shrink_sel = np.abs(after[k][big[k]]).mean() / np.abs(before[k][big[k]]).mean()
        shrink_rest = np.abs(after[k][~big[k]]).mean() / np.abs(before[k][~big[k]]).mean()
        assert shrink_sel < 0.5 < shrink_rest, (k, shrink_sel, shrink_rest)


def test_growth_curves():
    lin = regularizers.LinearStepGrowth(delta=0.1, every=5, lambda_max=0.3)
    assert [lin(t) for t in (0, 4, 5, 9, 10, 15, 100)] == pytest.approx(
        [0, 0, 0.1, 0.1, 0.2, 0.3, 0.3])
    assert lin.steps_to_max() == 15
    pw = regularizers.PowerGrowth(lambda_max=2.0, steps=10, gamma=2.0)
    assert [pw(t) for t in (0, 5, 10, 20)] == pytest.approx([0, 0.5, 2.0, 2.0])
    with pytest.raises(ValueError, match=r"lambda_max >= 0 \(got -1\).*--lambda_max"):
        regularizers.PowerGrowth(lambda_max=-1)
    with pytest.raises(ValueError, match=r"every >= 1 \(got 0\).*--lambda_every"):
        regularizers.LinearStepGrowth(every=0)
    off = regularizers.PowerGrowth(lambda_max=0.0, steps=10)  # the no-extrusion ablation
    assert [off(t) for t in (0, 5, 10, 20)] == [0.0] * 4


def test_growth_callback_follows_its_curve_only_after_start():
    x, y = toy_data(n=64)
    model = compile_model(pruned_toy())
    regularizers.attach(model)
    growth = callbacks.RegularizerGrowth(regularizers.PowerGrowth(1.0, steps=4, gamma=2.0))
    seen = []

    class Starter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                growth.start()

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(regularizers.current_lambda(self.model))

    model.fit(x, y, batch_size=16, epochs=3, verbose=0,
              callbacks=[callbacks.UpdatePruningStep(), growth, Starter(), Watch()])
    assert seen[:4] == [0.0] * 4
    assert seen[4:] == pytest.approx([0.0, 1 / 16, 0.25, 9 / 16, 1.0, 1.0, 1.0, 1.0])
    growth.stop()
    assert regularizers.current_lambda(model) == 0.0
