"""TriggeredSchedule / OneShotSchedule: run-time plans, step counting, saving."""


import numpy as np
import pytest

from tf_unilth._compat import keras, tf
from tf_unilth import callbacks, masks, schedules, wrapper

from helpers import (StartSchedulesAt, compile_model, pruned_toy, toy_data)


def _decisions(schedule, steps):
    fn = tf.function(lambda s: schedule(s))  # traced once, like tfmot does
    out = []
    for step in steps:
        should, sparsity = fn(tf.constant(step, tf.int64))
        out.append((bool(should), round(float(sparsity), 6)))
    return out


def test_unstarted_schedule_never_prunes_and_start_arms_the_traced_plan():
    s = schedules.TriggeredSchedule(sparsities=[0.5, 0.75], offsets=[3, 6])
    fn = tf.function(lambda step: s(step))
    assert not any(bool(fn(tf.constant(i, tf.int64))[0]) for i in range(20))
    s.start(10)  # after tracing: the same graph must follow the variable
    fired = {i: float(fn(tf.constant(i, tf.int64))[1])
             for i in range(30) if bool(fn(tf.constant(i, tf.int64))[0])}
    assert fired == {13: 0.5, 16: 0.75}
    assert s.event_steps() == [13, 16]
    s.freeze()
    assert not any(bool(fn(tf.constant(i, tf.int64))[0]) for i in range(30))


def test_round_plan_geometric_and_fixed_rate():
    d = schedules.geometric_densities(0.9, 3)
    np.testing.assert_allclose(d, [0.1 ** (1 / 3), 0.1 ** (2 / 3), 0.1])
    np.testing.assert_allclose(schedules.fixed_rate_densities(0.2, 3), [0.8, 0.64, 0.512])
    assert schedules.rounds_to_reach(0.9, 0.2) == 11   # 0.8^11 = 0.086 <= 0.1 < 0.8^10
    s = schedules.TriggeredSchedule.rounds(d, steps_per_round=5)
    s.start(0)
    hits = [(i, sp) for i, (ok, sp) in enumerate(_decisions(s, range(20))) if ok]
    assert [h[0] for h in hits] == [5, 10, 15]
    np.testing.assert_allclose([h[1] for h in hits], [1 - x for x in d], rtol=1e-6)


def test_one_shot_fires_once_at_the_next_step_and_set_sparsity_retargets():
    s = schedules.OneShotSchedule(0.8)
    s.start(7)
    assert [i for i, (ok, _) in enumerate(_decisions(s, range(20))) if ok] == [8]
    s.set_sparsity(0, 0.6)
    assert _decisions(s, [8]) == [(True, 0.6)]


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_sparsity_outside_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        schedules.OneShotSchedule(bad)


def test_bad_offsets_are_refused():
    with pytest.raises(ValueError, match="offsets"):
        schedules.TriggeredSchedule([0.5, 0.6], [4, 4])
    with pytest.raises(ValueError, match="one entry per"):
        schedules.TriggeredSchedule([0.5], [4, 5])


def test_config_round_trip():
    s = schedules.TriggeredSchedule([0.3, 0.6], [2, 9], name="plan")
    again = schedules.TriggeredSchedule.from_config(s.get_config()["config"])
    assert again.get_config() == s.get_config()
    one = schedules.OneShotSchedule(0.42)
    assert schedules.OneShotSchedule.from_config(one.get_config()).get_config() == one.get_config()


def test_first_event_respects_tfmot_step_counting():
    """pruning_step starts at -1, is 0 after on_train_begin and the first batch
    sees 1; a plan started at step s prunes on the batch that sees s + offset."""
    x, y = toy_data(n=64)
    model = compile_model(pruned_toy(densities=(0.5,), steps_per_round=3))
    assert int(wrapper.wrappers(model)[0].pruning_step.numpy()) == -1
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((callbacks.current_step(self.model), masks.sparsity(self.model)))

    # 4 batches per epoch; started at the end of epoch 0 (step 4): event at step 7.
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[callbacks.UpdatePruningStep(), StartSchedulesAt(0), Watch()])
    assert [s for s, _ in seen] == list(range(1, 9))
    assert [round(sp, 3) for _, sp in seen] == [0, 0, 0, 0, 0, 0, 0.5, 0.5]


@pytest.mark.parametrize("fmt", ["keras", "h5", "tf"])
def test_pruned_model_round_trips_with_our_schedule_and_keeps_training(tmp_path, fmt):
    x, y = toy_data(n=64)
    model = compile_model(pruned_toy(densities=(0.5, 0.25), steps_per_round=2))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[callbacks.UpdatePruningStep(), StartSchedulesAt(0)])
    before = masks.get_masks(model)
    path = str(tmp_path / ("model." + fmt if fmt != "tf" else "saved"))
    model.save(path)
    loaded = keras.models.load_model(path)
    layers = wrapper.wrappers(loaded)
    assert layers and all(isinstance(l, wrapper.MonotonePruneLowMagnitude) for l in layers)
    for original, again in zip(wrapper.wrappers(model), layers):
        assert type(again.pruning_schedule) is schedules.TriggeredSchedule
        assert again.pruning_schedule.get_config() == original.pruning_schedule.get_config()
    after = masks.get_masks(loaded)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)
    # It keeps training: a loaded schedule is frozen until started again.
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0,
               callbacks=[callbacks.UpdatePruningStep(), StartSchedulesAt(0)])
    assert masks.sparsity(loaded) >= masks.sparsity(model)
    assert all(np.all(after[k] >= masks.get_masks(loaded)[k]) for k in after)


def test_set_plan_changes_the_traced_plan():
    s = schedules.TriggeredSchedule([0.5, 0.7], [100, 200])
    fn = tf.function(lambda step: s(step))
    fn(tf.constant(0, tf.int64))
    s.set_plan([0.2, 0.4], [2, 4])
    s.start(10)
    fired = {i: round(float(fn(tf.constant(i, tf.int64))[1]), 6)
             for i in range(30) if bool(fn(tf.constant(i, tf.int64))[0])}
    assert fired == {12: 0.2, 14: 0.4}
    with pytest.raises(ValueError, match="2 events"):
        s.set_plan([0.1], [3])
