"""What a tfmot / tf_keras user meets: plain tickets, tfmot-pruned models with
our parts, and find_ticket's loss, metrics, optimizer and exclude."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tf_unilth
from tf_unilth._compat import keras, tfmot
from tf_unilth import callbacks, masks, regularizers, wrapper

from helpers import Recorder, StartSchedulesAt, compile_model, toy_data, toy_model

METHODS = {
    "dense": dict(epochs=1),
    "random": dict(epochs=1),
    "lth": dict(epochs_per_round=1, prune_rate=0.5),
    "dlth": dict(lambda_delta=0.05, lambda_every=1, hold_epochs=0, finetune_epochs=1),
    "unilth": dict(epochs=6, rounds=2, round_epochs=1, patience=1, min_finetune_epochs=1),
    "unidlth": dict(epochs=6, rounds=2, round_epochs=1, patience=1, min_finetune_epochs=1),
}


def _small(n=240):
    x, y = toy_data(n=n)
    return (x[:160], y[:160]), (x[160:200], y[160:200]), (x[200:], y[200:])


def test_every_methods_ticket_loads_and_trains_where_only_tf_keras_is_imported(tmp_path):
    train, val, test = _small()
    paths = {}
    for method, kw in METHODS.items():
        result = tf_unilth.find_ticket(toy_model(), method, train, val, target_sparsity=0.5,
                                       test_data=test, batch_size=16, verbose=0,
                                       printer=lambda *_: None, **kw)
        paths[method] = str(tmp_path / f"{method}.keras")
        result.model.save(paths[method])
    np.save(tmp_path / "x.npy", test[0])
    np.save(tmp_path / "y.npy", test[1])
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import tf_keras
        x, y = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'y.npy')!r})
        for name, path in {paths!r}.items():
            model = tf_keras.models.load_model(path)
            loss, acc = model.evaluate(x, y, verbose=0)
            model.fit(x, y, epochs=1, verbose=0)
            print(name, "ok", round(acc, 3))
        assert not any(m.startswith("tf_unilth") for m in sys.modules), "tf_unilth imported"
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=dict(env, TF_CPP_MIN_LOG_LEVEL="2"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(line.split()[0] for line in done.stdout.splitlines() if " ok " in line) \
        == sorted(METHODS)


def _tfmot_pruned(sparsity=0.5):
    schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=1)
    return tfmot.sparsity.keras.prune_low_magnitude(toy_model(), pruning_schedule=schedule)


def test_our_callbacks_drive_a_tfmot_pruned_model(tmp_path):
    x, y = toy_data(n=128)
    model = compile_model(_tfmot_pruned())
    rewind = callbacks.Rewind(str(tmp_path), keep_epochs=2, save_step=3)
    rec = Recorder()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[callbacks.UpdatePruningStep(), rewind, rec])
    assert masks.sparsity(model) == pytest.approx(0.5, abs=0.02)
    before = masks.get_masks(model)
    rewind.rewind_to_step()  # weights of step 3, masks kept
    assert masks.get_masks(model) == before
    for r in masks.pruned_weights(model):
        assert np.all(r.weight.numpy()[~before[r.key]] == 0)


def test_regularizers_refuse_a_tfmot_pruned_model_before_changing_it():
    model = _tfmot_pruned()
    losses = len(model.losses)
    with pytest.raises(TypeError, match="tfmot's PruneLowMagnitude.*tf_unilth.prune"):
        regularizers.attach(model)
    assert len(model.losses) == losses and not regularizers.regularizers(model)


def test_find_ticket_takes_loss_metrics_an_optimizer_instance_and_exclude():
    train, val, test = _small()
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append((type(self.model.optimizer).__name__,
                         float(self.model.optimizer.learning_rate.numpy()),
                         type(self.model.loss).__name__))

    result = tf_unilth.find_ticket(
        toy_model(), "random", train, val, target_sparsity=0.8, test_data=test, epochs=2,
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["sparse_categorical_accuracy"], exclude=["fc2"], batch_size=16,
        verbose=0, printer=lambda *_: None, callbacks=[Watch()])
    assert seen == [("SGD", pytest.approx(0.05), "SparseCategoricalCrossentropy")]
    assert result.final["test_accuracy"] is not None
    assert [l.layer.name for l in wrapper.wrappers(result.pruned_model)] == ["fc1", "output"]
    assert np.all(result.model.get_layer("fc2").kernel.numpy() != 0)  # kept dense
    assert result.sparsity == pytest.approx(0.8, abs=0.01)
    with pytest.raises(ValueError, match="exclude names layers not in the model.*'fc9'"):
        tf_unilth.find_ticket(toy_model(), "random", train, val, exclude=["fc9"])


def test_a_model_ending_in_softmax_is_trained_on_probabilities():
    inp = keras.Input((20,))
    init = keras.initializers.GlorotNormal
    x = keras.layers.Dense(32, activation="relu", name="fc1", kernel_initializer=init(1))(inp)
    x = keras.layers.Dense(3, name="output", kernel_initializer=init(2))(x)
    model = keras.Model(inp, keras.layers.Softmax(name="probabilities")(x))
    train, val, test = _small()
    result = tf_unilth.find_ticket(model, "lth", train, val, target_sparsity=0.3,
                                   test_data=test, epochs_per_round=6, batch_size=16,
                                   learning_rate=1e-2, verbose=0, printer=lambda *_: None)
    assert result.model.loss.get_config()["from_logits"] is False
    assert result.final["test_accuracy"] > 0.6  # chance: 1/3


def test_tfmot_layer_names_and_weights_move_between_tfmot_and_us():
    ours = tf_unilth.prune(toy_model())
    theirs = tfmot.sparsity.keras.prune_low_magnitude(toy_model(seed=3))
    assert ours.get_layer("prune_low_magnitude_fc1") is wrapper.wrappers(ours)[0]
    assert [l.name for l in ours.layers[1:]] == [l.name for l in theirs.layers[1:]]
    ours.set_weights(theirs.get_weights())
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_array_equal(a, b)
    theirs.set_weights(tf_unilth.prune(toy_model(seed=4)).get_weights())


def test_removed_weights_stay_zero_at_every_step_under_tfmots_own_callback():
    x, y = toy_data(n=128)
    model = compile_model(
        wrapper.prune(toy_model(), lambda layer: tf_unilth.TriggeredSchedule.rounds(
            [0.6, 0.3], steps_per_round=3)), optimizer=keras.optimizers.Adam(0.5))
    rec = Recorder()
    model.fit(x, y, batch_size=16, epochs=3, verbose=0,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), StartSchedulesAt(0), rec])
    assert masks.sparsity(model) == pytest.approx(0.7, abs=0.02)
    moved = max(float(np.abs(w[m == 0]).max(initial=0.0)) for batch in rec.batches
                for w, m in batch)
    assert moved == 0.0


@pytest.mark.parametrize("fmt", ["h5", "keras"])
def test_our_schedule_in_tfmots_wrapper_saves_and_loads_still_armed(fmt, tmp_path):
    x, y = toy_data(n=64)
    model = compile_model(tfmot.sparsity.keras.prune_low_magnitude(
        toy_model(), pruning_schedule=tf_unilth.TriggeredSchedule([0.5, 0.7], [3, 40])))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    for layer in wrapper.wrappers(model):
        layer.pruning_schedule.start(2)  # a plan in progress: event 1 at step 5, 2 at 42
    model.fit(x, y, batch_size=16, epochs=1, verbose=0,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    path = str(tmp_path / f"model.{fmt}")
    model.save(path)
    with tfmot.sparsity.keras.prune_scope():  # tfmot's public way to load its models
        again = keras.models.load_model(path)
    for original, loaded in zip(wrapper.wrappers(model), wrapper.wrappers(again)):
        assert type(loaded.pruning_schedule) is tf_unilth.TriggeredSchedule
        assert loaded.pruning_schedule.get_config() == original.pruning_schedule.get_config()
        assert loaded.pruning_schedule.event_steps() == [5, 42]  # still armed
    assert masks.get_masks(again) == masks.get_masks(model)


def test_h5_weights_load_both_ways_between_tfmots_models_and_ours(tmp_path):
    ours = tf_unilth.prune(toy_model(seed=1))
    theirs = tfmot.sparsity.keras.prune_low_magnitude(toy_model(seed=2))
    ours.save_weights(str(tmp_path / "ours.h5"))
    saved = ours.get_weights()
    theirs.save_weights(str(tmp_path / "theirs.h5"))
    ours.load_weights(str(tmp_path / "theirs.h5"))
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_array_equal(a, b)
    fresh = tfmot.sparsity.keras.prune_low_magnitude(toy_model(seed=3))
    fresh.load_weights(str(tmp_path / "ours.h5"))
    for a, b in zip(fresh.get_weights(), saved):
        np.testing.assert_array_equal(a, b)


def test_an_m_by_n_mask_appears_at_the_first_step_like_tfmots():
    x, y = toy_data(n=64)
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0)  # tfmot's default use
    model = compile_model(keras.models.clone_model(
        toy_model(), clone_function=lambda layer: tf_unilth.MonotonePruneLowMagnitude(
            layer, pruning_schedule=schedule, sparsity_m_by_n=(2, 4))
        if isinstance(layer, keras.layers.Dense) else layer))
    seen = []

    class First(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                seen.extend(l.pruning_vars[0][1].numpy() for l in wrapper.wrappers(self.model))

    model.fit(x, y, batch_size=16, epochs=1, verbose=0,
              callbacks=[callbacks.UpdatePruningStep(), First()])
    for mask in seen:  # after the first step: 2 of every 4 consecutive inputs kept
        groups = np.moveaxis(mask, 0, -1).reshape(-1, 4)
        assert np.all(groups.sum(axis=1) == 2)
