"""The methods end to end on small real-MNIST subsets, and their bad inputs."""

import numpy as np
import pytest

import tf_unilth
from tf_unilth._compat import keras, tf
from tf_unilth import callbacks, masks, wrapper
from tf_unilth.methods import unilth

from helpers import toy_data, toy_model


@pytest.fixture(scope="module")
def mnist_small(mnist_data_dir):
    return tf_unilth.data.load("mnist", data_dir=mnist_data_dir, download=False,
                               batch_size=60, train_limit=3000, validation_size=1000,
                               test_limit=1000)


def _lenet(seed=0):
    return tf_unilth.models.build("lenet300_100", (28, 28, 1), 10, seed=seed)


def test_lenet_one_epoch_on_real_mnist_reaches_95_percent(mnist_data_dir):
    splits = tf_unilth.data.load("mnist", data_dir=mnist_data_dir, download=False,
                                 batch_size=60)
    result = tf_unilth.find_ticket(_lenet(), "dense", splits.train, splits.validation,
                                   test_data=splits.test, epochs=1, verbose=0,
                                   printer=lambda *_: None)
    assert result.final["test_accuracy"] >= 0.95
    assert result.total["train_steps"] == splits.steps_per_epoch() == 917


METHOD_ARGS = {
    "random": dict(epochs=2),
    "lth": dict(epochs_per_round=1, prune_rate=0.5, rewind_step=5),
    "dlth": dict(growth="absolute", lambda_delta=0.02, lambda_every=1, hold_epochs=1, finetune_epochs=1),
    "unilth": dict(epochs=9, rounds=2, round_epochs=1, patience=1),
    "unidlth": dict(epochs=9, rounds=2, round_epochs=1, patience=1),
}


@pytest.mark.parametrize("method", sorted(METHOD_ARGS))
def test_each_method_reaches_its_target_with_monotone_masks(method, mnist_small):
    seen = []

    class Masks(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if wrapper.wrappers(self.model):
                seen.append(masks.get_masks(self.model))

    result = tf_unilth.find_ticket(
        _lenet(), method, mnist_small.train, mnist_small.validation, target_sparsity=0.75,
        test_data=mnist_small.test, verbose=0, printer=lambda *_: None,
        callbacks=[Masks()], **METHOD_ARGS[method])
    if method == "lth":
        # Whole rounds until the target: the round before was still short of it.
        assert result.sparsity >= 0.75 > result.rounds[-2]["sparsity"]
    else:
        assert result.sparsity == pytest.approx(0.75, abs=0.005)
    assert tf_unilth.ticket_sparsity(result.model) == pytest.approx(result.sparsity, abs=1e-6)
    assert not wrapper.wrappers(result.model)
    for earlier, later in zip(seen, seen[1:]):
        for k in earlier:
            assert np.all(later[k] <= earlier[k]), f"{method}: mask regrew in {k}"
    assert result.final["test_accuracy"] > 0.5
    for r in result.rounds:
        assert {"round", "sparsity", "test_accuracy", "val_accuracy", "epochs",
                "train_steps", "wall_seconds"} <= set(r)
    steps = [r["train_steps"] for r in result.rounds]
    assert steps == sorted(steps) and steps[-1] <= result.total["train_steps"]


def test_unilth_trigger_rewind_growth_and_fidelity(mnist_small):
    rounds = []
    model = unilth.prepare(_lenet(), target_sparsity=0.8, rounds=2)
    model.compile(keras.optimizers.Adam(1.2e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    lambdas, rewound = [], []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            lambdas.append(tf_unilth.regularizers.current_lambda(self.model))

    cbs = unilth.callbacks(model, target_sparsity=0.8, epochs=12, rounds=2, round_epochs=1,
                           patience=2, min_finetune_epochs=0, on_round_end=lambda m, info: rounds.append(info))
    trigger, stages = cbs[2], cbs[3]
    snapshots = {}

    class Snap(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots[epoch] = [v.numpy().copy() for v in self.model.trainable_variables]

    trigger.listeners.append(lambda t, e, l: rewound.append(
        [v.numpy().copy() for v in t.model.trainable_variables]))
    model.fit(mnist_small.train, validation_data=mnist_small.validation, epochs=12,
              verbose=0, callbacks=[Snap()] + cbs + [Watch()])
    spe = mnist_small.steps_per_epoch()
    fired = trigger.fired_epoch
    assert fired is not None and not stages.forced
    assert fired == trigger.best_epoch + 2           # fired after P = 2 flat epochs
    # The rewind restored epoch fired - r (r = P) exactly (no masks yet).
    for got, want in zip(rewound[0], snapshots[fired - 2]):
        np.testing.assert_array_equal(got, want)
    # lambda was 0 until the trigger, grew in each round, then was switched off.
    assert all(v == 0.0 for v in lambdas[:(fired + 1) * spe])
    assert max(lambdas[(fired + 1) * spe:(fired + 2) * spe]) == pytest.approx(1.0)
    assert len(rounds) == 2 and masks.sparsity(model) == pytest.approx(0.8, abs=0.005)
    assert all(0.0 <= r["selection_fidelity"] <= 1.0 for r in rounds)
    assert rounds[-1]["selection_fidelity"] > 0.9  # extrusion made them the smallest
    assert stages.stage == 3


def test_model_fit_route_and_find_ticket_give_the_same_kind_of_ticket(mnist_small):
    args = dict(rounds=2, round_epochs=1, patience=1)
    model = unilth.prepare(_lenet(), 0.75, rounds=2)
    model.compile(keras.optimizers.Adam(1.2e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(mnist_small.train, validation_data=mnist_small.validation, epochs=8, verbose=0,
              callbacks=unilth.callbacks(model, 0.75, epochs=8, on_round_end=lambda *a: None,
                                         **args))
    fit_ticket = tf_unilth.strip(model)
    api = tf_unilth.find_ticket(_lenet(), "unilth", mnist_small.train, mnist_small.validation,
                                target_sparsity=0.75, epochs=8, verbose=0,
                                printer=lambda *_: None, **args)
    assert [type(l) for l in fit_ticket.layers] == [type(l) for l in api.model.layers]
    assert tf_unilth.ticket_sparsity(fit_ticket) == pytest.approx(
        tf_unilth.ticket_sparsity(api.model), abs=1e-6) == pytest.approx(0.75, abs=0.005)


def test_lth_surviving_weights_equal_theta_k_after_each_rewind(mnist_small):
    k = 7
    theta_k, starts = {}, []

    class Grab(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            starts.append(masks.get_weights(self.model))

        def on_train_batch_end(self, batch, logs=None):
            if callbacks.current_step(self.model) == k:
                theta_k.update(masks.get_weights(self.model))

    tf_unilth.find_ticket(_lenet(), "lth", mnist_small.train, mnist_small.validation,
                          target_sparsity=0.5, epochs_per_round=1, prune_rate=0.3, rewind_step=k,
                          verbose=0, printer=lambda *_: None, callbacks=[Grab()])
    assert len(starts) == 3  # rounds 0, 1, 2 (0.3 per round: 0.5 needs 2 rounds)
    for start in starts[1:]:
        for key, w in start.items():
            alive = w != 0
            np.testing.assert_array_equal(w[alive], theta_k[key][alive])
            assert alive.mean() < 1.0


# ---------------------------------------------------------------------------
# Bad input

def _toy_data_args():
    x, y = toy_data(n=64)
    return (x, y), (x, y)


@pytest.mark.parametrize("bad", [1.0, -0.2, 1.5])
def test_target_sparsity_outside_unit_interval(bad):
    train, val = _toy_data_args()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        tf_unilth.find_ticket(toy_model(), "unilth", train, val, target_sparsity=bad)


def test_unknown_method_and_hyperparameter():
    train, val = _toy_data_args()
    with pytest.raises(ValueError, match="Unknown method 'imp'.*known"):
        tf_unilth.find_ticket(toy_model(), "imp", train, val)
    with pytest.raises(TypeError, match="no hyperparameter.*'patience'"):
        tf_unilth.find_ticket(toy_model(), "lth", train, val, patience=3)


def test_model_without_prunable_layers():
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Activation("softmax")(inp))
    with pytest.raises(ValueError, match="no prunable layer"):
        tf_unilth.prune(model)


def test_layer_tfmot_cannot_wrap_is_named_with_the_fix():
    class Scale(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight("w", shape=(shape[-1], shape[-1]))

        def call(self, x):
            return x @ self.w

    inp = keras.Input((4,))
    x = Scale(name="my_scale")(inp)
    model = keras.Model(inp, keras.layers.Dense(2, name="output")(x))
    with pytest.raises(ValueError, match="my_scale.*exclude=\\['my_scale'\\]"):
        tf_unilth.prune(model)
    assert wrapper.wrappers(tf_unilth.prune(model, exclude=["my_scale"]))
    # a layer with only a scale or biases has nothing to prune: kept dense (issue #26)
    vector = keras.layers.Dense(2, name="output")(
        keras.layers.LayerNormalization(name="ln")(inp))
    assert wrapper.mask_keys(tf_unilth.prune(keras.Model(inp, vector))) == ["output/0"]


def test_subclassed_model_says_what_to_do():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(ValueError, match="subclassed.*call it once on a batch"):
        tf_unilth.prune(Net())
    net = Net()
    net(tf.zeros((1, 3)))  # built: pruned inside a functional model (issue #26)
    assert [l.name for l in wrapper.wrappers(tf_unilth.prune(net))] == [
        f"prune_low_magnitude_{net.name}"]


def test_unilth_without_validation_data():
    x, y = toy_data(n=64)
    with pytest.raises(ValueError, match="validation"):
        tf_unilth.find_ticket(toy_model(), "unilth", (x, y), None, target_sparsity=0.5,
                              epochs=12)


def test_a_keras3_model_goes_to_the_keras3_search():
    keras3 = pytest.importorskip("keras")
    if not keras3.__version__.startswith("3"):
        pytest.skip("Keras 3 not installed")
    train, val = _toy_data_args()
    model = keras3.Sequential([keras3.Input(train[0].shape[1:]), keras3.layers.Dense(3)])
    with pytest.raises(ValueError, match="budget|epochs"):  # checked by the same method
        tf_unilth.find_ticket(model, "lth", train, val, epochs=1, rounds=3)
    with pytest.raises(NotImplementedError, match="Keras 3"):  # refused, not silently lost
        tf_unilth.find_ticket(model, "dense", train, val, epochs=1, state_dir="/nonexistent")


def test_dlth_fine_tunes_two_thirds_of_any_budget_and_keeps_10_plus_20_reachable():
    from tf_unilth import methods as methods_lib  # pylint: disable=import-outside-toplevel
    dlth = methods_lib.get("dlth")
    # A user's dense budget of 20 epochs is no longer refused: 7 + 13.
    dlth(epochs=20).check(0.9)
    assert [dlth(epochs=e).finetune() for e in (None, 30, 20, 3, 2)] == [20, 20, 13, 2, 1]
    # The grid's (and Bai et al.'s) 10 + 20, by default and spelled out.
    assert dlth(epochs=30).finetune() == dlth(epochs=30, finetune_epochs=20).finetune() == 20
    with pytest.raises(ValueError, match="no regularization epoch"):
        dlth(epochs=1).check(0.9)


def test_hyperparameter_ranges_are_declared_and_checked_in_one_place(capsys):
    from tf_unilth import methods  # pylint: disable=import-outside-toplevel
    from tf_unilth.methods.base import Range  # pylint: disable=import-outside-toplevel
    from tf_unilth.cli import errors  # pylint: disable=import-outside-toplevel
    assert [str(Range(at_least=1)), str(Range(above=0, below=1)), str(Range(above=0, at_most=1)),
            str(Range(at_most=2))] == [">= 1", "in (0, 1)", "in (0, 1]", "<= 2"]
    assert 1 in Range(at_least=1) and 0 not in Range(at_least=1)
    assert 0 not in Range(above=0, at_most=1) and 1 in Range(above=0, at_most=1)
    assert not Range() and 5 in Range()
    cases = [("lth", "prune_rate", 1.0, "in (0, 1)"), ("lth", "rounds", 0, ">= 1"),
             ("lth", "rewind_step", -1, ">= 0"), ("dlth", "growth_fraction", 0.0, "in (0, 1]"),
             ("dlth", "finetune_epochs", 0, ">= 1"), ("unilth", "patience", -1, ">= 0"),
             ("unidlth", "max_cut", 1.0, "in (0, 1)"), ("unilth", "gamma", 0.0, "> 0"),
             ("unilth_retrain_k", "retrain_epochs", 0, ">= 1"), ("dense", "epochs", 0, ">= 1"),
             ("random", "epochs", 0, ">= 1"), ("lth", "allocation", "erk2", "one of")]
    for method, field, value, allowed in cases:
        with pytest.raises(methods.HyperparameterError) as refused:
            methods.get(method).create(**{field: value}).check(0.5)
        message = str(refused.value)
        assert message.startswith(f"{method}: {field} must be {allowed}") and "--" not in message
        assert refused.value.hyperparameters == (field,)
    methods.get("lth").create(rounds=None, epochs=None).check(0.5)  # None: derived, allowed
    # Cross-field checks name both fields; the command line adds the flags.
    with pytest.raises(methods.HyperparameterError) as refused:
        methods.get("dlth").create(epochs=20, finetune_epochs=20).check(0.5)
    assert refused.value.hyperparameters == ("epochs", "finetune_epochs")
    with pytest.raises(SystemExit), errors.one_line():
        methods.get("dlth").create(epochs=20, finetune_epochs=20).check(0.5)
    assert "lower finetune_epochs. (flags --epochs, --finetune_epochs)" in capsys.readouterr().err
