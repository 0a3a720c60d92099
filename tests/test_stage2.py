"""UniLTH / UniDLTH stage-2 options: round plans, learning-rate schedule,
decoupled weight decay, removal at the end, and the retrain from the rewind point."""

import numpy as np
import pytest

import tf_unilth
from tf_unilth._compat import keras
from tf_unilth import masks, wrapper
from tf_unilth.methods.unilth import UniLTH

from helpers import toy_data, toy_model

QUIET = dict(verbose=0, printer=lambda *_: None)


def _data(n=240):
    x, y = toy_data(n=n)
    return dict(train_data=(x[:160], y[:160]), validation_data=(x[160:200], y[160:200]),
                test_data=(x[200:], y[200:]), batch_size=16, learning_rate=5e-3)


def test_the_imp_plan_cuts_at_most_max_cut_below_its_threshold():
    plan = UniLTH(rounds=2, cut_below=0.3, max_cut=0.2, short_round_epochs=1,
                  round_plan="imp").round_plan_of(0.9)
    densities = [d for d, _ in plan]
    assert densities[1] == pytest.approx(0.3) and densities[-1] == pytest.approx(0.1)
    cuts = [1 - b / a for a, b in zip(densities[1:], densities[2:])]
    assert max(cuts) <= 0.2 + 1e-9 and len(cuts) == 5  # 0.3 -> 0.1 at <= 20% a round
    assert [e for _, e in plan] == [2, 2, 1, 1, 1, 1, 1]
    assert UniLTH(round_plan="imp", cut_below=0.2).round_plan_of(0.5) == \
        UniLTH().round_plan_of(0.5)  # a target above the threshold: geometric
    with pytest.raises(ValueError, match="cannot hold stage 1.*7 rounds"):
        tf_unilth.find_ticket(toy_model(), "unilth", target_sparsity=0.9, epochs=10, rounds=2,
                              round_plan="imp", cut_below=0.3, min_finetune_epochs=1,
                              **QUIET, **_data())


def test_an_imp_plan_search_removes_at_the_planned_steps():
    result = tf_unilth.find_ticket(
        toy_model(), "unilth", target_sparsity=0.8, epochs=14, rounds=2, round_epochs=1,
        patience=1, round_plan="imp", cut_below=0.4, max_cut=0.3, min_finetune_epochs=1,
        **QUIET, **_data())
    plan = result.method_info["plan"]
    steps = wrapper.event_steps(result.pruned_model)
    assert len(steps) == plan["rounds"] == len(result.rounds) == 4
    assert np.diff(steps).tolist() == [10, 10, 10]  # a round an epoch (10 steps)
    assert result.sparsity == pytest.approx(0.8, abs=0.01)


def test_the_learning_rate_restarts_every_round_and_decays_in_it():
    seen = []

    class Rate(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(keras.backend.get_value(self.model.optimizer.learning_rate)))

    result = tf_unilth.find_ticket(
        toy_model(), "unilth", target_sparsity=0.8, epochs=10, rounds=2, round_epochs=2,
        patience=1, lr_schedule="cosine", min_finetune_epochs=2, callbacks=[Rate()],
        **QUIET, **_data())
    trigger = result.method_info["trigger_epoch"]
    spe = 10
    stage1, round1 = seen[:trigger * spe], seen[trigger * spe:(trigger + 2) * spe]
    assert stage1 == pytest.approx([5e-3] * len(stage1))  # constant in stage 1
    assert round1[0] == pytest.approx(5e-3, rel=0.01) and round1[-1] < 1e-4
    round2 = seen[(trigger + 2) * spe:(trigger + 4) * spe]
    assert round2[0] == pytest.approx(5e-3, rel=0.01)  # rewound at the round's start
    assert all(a >= b for a, b in zip(round1, round1[1:]))


def test_weight_decay_starts_with_stage_two():
    def run(decay):
        seen = {}

        class Stage1(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                seen.setdefault(epoch, masks.get_weights(self.model))

        result = tf_unilth.find_ticket(
            toy_model(), "unilth", target_sparsity=0.5, epochs=8, rounds=1, round_epochs=1,
            patience=1, weight_decay=decay, min_finetune_epochs=1, callbacks=[Stage1()],
            **QUIET, **_data())
        return result, seen

    plain, plain_seen = run(0.0)
    decayed, decayed_seen = run(50.0)
    first = plain.method_info["trigger_epoch"] - 2  # before the trigger: no regularization
    for key in plain_seen[first]:
        np.testing.assert_array_equal(plain_seen[first][key], decayed_seen[first][key])
    norm = lambda r: sum(float(np.sum(w ** 2)) for w in  # noqa: E731
                         masks.get_weights(r.pruned_model).values())
    assert norm(decayed) < 0.8 * norm(plain)


def test_unidlth_can_extrude_every_chunk_and_remove_at_the_end():
    result = tf_unilth.find_ticket(
        toy_model(), "unidlth", target_sparsity=0.75, epochs=9, rounds=3, round_epochs=1,
        patience=1, remove_at_end=True, min_finetune_epochs=1, **QUIET, **_data())
    assert [r["sparsity"] for r in result.rounds[:-1]] == [0.0, 0.0]
    assert result.rounds[-1]["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert len(wrapper.event_steps(result.pruned_model)) == 1
    reference = tf_unilth.find_ticket(
        toy_model(), "unidlth", target_sparsity=0.75, epochs=9, rounds=3, round_epochs=1,
        patience=1, remove_at_end=False, min_finetune_epochs=1, **QUIET, **_data())
    assert masks.get_masks(result.pruned_model) == masks.get_masks(reference.pruned_model)


def test_unidlth_at_its_defaults_in_one_model_fit_removes_once_at_the_end():
    from tf_unilth.methods import unilth  # pylint: disable=import-outside-toplevel
    hp = dict(rounds=3, round_epochs=1, patience=1, min_finetune_epochs=1)
    pruned = unilth.prepare(toy_model(), 0.75, random_ticket=True, **hp)
    pruned.compile(keras.optimizers.Adam(5e-3),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = toy_data(n=200)
    pruned.fit(x[:160], y[:160], batch_size=16, epochs=9, validation_data=(x[160:], y[160:]),
               verbose=0, callbacks=unilth.callbacks(pruned, 0.75, epochs=9,
                                                     random_ticket=True, **hp))
    assert len(wrapper.event_steps(pruned)) == 1  # remove_at_end, the default
    assert masks.sparsity(pruned) == pytest.approx(0.75, abs=0.01)


def test_the_retrain_from_the_rewind_point_is_its_own_round():
    result = tf_unilth.find_ticket(
        toy_model(), "unilth_retrain_k", target_sparsity=0.6, epochs=8, rounds=2,
        round_epochs=1, patience=1, min_finetune_epochs=1, retrain_epochs=3,
        **QUIET, **_data())
    last = result.rounds[-1]
    assert last["retrained_from"] == "rewind_point" and last["round"] == 3
    # The retrain costs its 3 epochs (10 batches each) on top of the UniLTH
    # search it retrains, which ended after its last round and within its 8.
    searched = last["epochs"] - 3
    assert last["epochs"] == result.total["epochs"]
    assert result.rounds[-2]["epochs"] <= searched <= 8
    assert last["train_steps"] == result.total["train_steps"] == 10 * last["epochs"]
    assert result.method_info["plan"]["epochs"] == 8 + 3 >= result.total["epochs"]
    assert last["sparsity"] == pytest.approx(0.6, abs=0.01)
