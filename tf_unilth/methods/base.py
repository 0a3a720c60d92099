"""The method protocol: a ticket method is a registered dataclass.

Its fields are its hyperparameters, each with its default and help text in
one place (`hparam`); `run(search, model, target_sparsity)` is its algorithm
box, written against the `tf_unilth.search.Search` protocol only.
`register_method` makes it available by name to `find_ticket`, to the
command line (one flag per field, the defaults shown per method in
`--helpfull`) and to the benchmarks:

    @register_method("unilth_retrain")
    @dataclasses.dataclass
    class UniLTHRetrain(UniLTH):
        retrain_epochs: int = hparam(10, "Epochs of the final retraining.")
        def run(self, search, model, target_sparsity): ...

Field types drive the command line: int, float, str (with `choices`), bool,
`tuple` (a comma-separated list of ints, like `block_size`); a default of None
means "derived from the others" (the help says how).
"""

import dataclasses
import typing

from tf_unilth import kits
from tf_unilth.sparsity import Selector, allocation, criteria, plans, selection
from tf_unilth.sparsity.allocation import Floor

_METHODS = {}


class HyperparameterError(ValueError):
    """A hyperparameter value a method cannot work with. `hyperparameters`
    names the fields at fault, so the command line can add their flags to
    the message (the library's message names the fields, not flags)."""

    def __init__(self, message, hyperparameters):
        super().__init__(message)
        self.hyperparameters = tuple(hyperparameters)


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric hyperparameter allows: bounds, each inclusive
    (`at_least`, `at_most`) or exclusive (`above`, `below`); None = unbounded."""
    at_least: float = None
    above: float = None
    below: float = None
    at_most: float = None

    def __contains__(self, value):
        return not ((self.at_least is not None and value < self.at_least)
                    or (self.above is not None and value <= self.above)
                    or (self.below is not None and value >= self.below)
                    or (self.at_most is not None and value > self.at_most))

    def __str__(self):
        low = (f"[{self.at_least}" if self.at_least is not None
               else f"({self.above}" if self.above is not None else None)
        high = (f"{self.at_most}]" if self.at_most is not None
                else f"{self.below})" if self.below is not None else None)
        if low and high:
            return f"in {low}, {high}"
        if low:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        return ("<= " if high[-1] == "]" else "< ") + high[:-1]

    def __bool__(self):
        return any(b is not None for b in dataclasses.astuple(self))


def hparam(default, help, *, choices=None, at_least=None, above=None, below=None,  # pylint: disable=redefined-builtin
           at_most=None):
    """A hyperparameter field: its default, one line of help, and the values
    it allows (`choices`, or a `Range` from the bounds), which `Method.check`
    tests for every field in one place. None (a derived default) always passes."""
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "range": Range(at_least, above, below, at_most)})


@dataclasses.dataclass
class Method:
    """Base of every ticket method (see module doc)."""

    name: typing.ClassVar[str] = None
    # Whether the method needs validation data (a plateau trigger watches it).
    needs_validation: typing.ClassVar[bool] = False

    def run(self, search, model, target_sparsity):
        """Trains `model` into a ticket at `target_sparsity` through `search`;
        returns the trained (wrapped) model."""
        raise NotImplementedError(f"{type(self).__name__}: a method implements run() "
                                  "(docs/EXTENDING.md)")

    def plan(self, mask, target_sparsity, steps_per_epoch, output_layers):
        """The method's budget and mask plan for a model whose prunable weights
        are `mask` (all kept), checked before anything is trained: returns
        what it will spend (a dict; `epochs` is the total) and raises a clear
        error when the budget cannot hold the method or the target cannot be
        reached. `run` follows the same plan."""
        del mask, target_sparsity, steps_per_epoch, output_layers
        return {"epochs": getattr(self, "epochs", None)}

    def check(self, target_sparsity):
        """Raises a clear error for hyperparameters that cannot work, before
        anything is trained or written (subclasses add their own checks)."""
        plans.check_sparsity(target_sparsity,
                             "target sparsity (target_sparsity=, flag --target_sparsity)")
        self.check_hyperparameters()

    def check_hyperparameters(self):
        """Every field against the choices and range its `hparam` declares."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            choices = field.metadata.get("choices")
            allowed = field.metadata.get("range")
            if choices and value not in choices:
                raise HyperparameterError(f"{self.name}: {field.name} must be one of "
                                          f"{list(choices)}, got {value!r}.", [field.name])
            if allowed and value not in allowed:
                raise HyperparameterError(f"{self.name}: {field.name} must be {allowed}, "
                                          f"got {value!r}.", [field.name])

    @classmethod
    def hyperparameters(cls):
        """The fields of this method (name, type, default, help)."""
        return [f for f in dataclasses.fields(cls)]

    @classmethod
    def create(cls, **values):
        """An instance from keyword values; an unknown name is an error listing
        the method's hyperparameters."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise TypeError(f"Method {cls.name!r} has no hyperparameter(s) {sorted(unknown)}; "
                            f"it takes {sorted(known)}.")
        return cls(**values)


def register_method(name):
    """Class decorator: registers a `Method` dataclass under `name`."""
    def decorator(cls):
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"register_method({name!r}) decorates a Method subclass.")
        if not dataclasses.is_dataclass(cls) or "__dataclass_fields__" not in vars(cls):
            cls = dataclasses.dataclass(cls)
        known = _METHODS.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (
                cls.__module__, cls.__qualname__):
            raise ValueError(f"A method named {name!r} is already registered "
                             f"({_METHODS[name].__qualname__}).")
        cls.name = name
        _METHODS[name] = cls
        return cls
    return decorator


def names():
    return tuple(sorted(_METHODS))


def get(name):
    """The registered method class called `name`."""
    if name not in _METHODS:
        raise ValueError(f"Unknown method {name!r}; known: {sorted(_METHODS)}.")
    return _METHODS[name]


# ---------------------------------------------------------------------------
# Hyperparameter groups shared by several methods

@dataclasses.dataclass
class Seeded(Method):
    seed: int = hparam(0, "Seed of the method's random choices (random tickets).")


@dataclasses.dataclass
class Allocated(Method):
    """How a mask is spread over the layers and shaped."""
    output_rate_scale: float = hparam(
        0.5, "The output layer is pruned at this times the others' rate (LTH's convention; "
        "1.0 prunes all layers alike).")
    output_layer: str = hparam(
        None, "The output layer (its name) for --output_rate_scale. Default: the prunable "
        "layer(s) producing the model's output.")
    block_size: tuple = hparam(
        None, "Remove whole blocks, e.g. 4,1 (Keras kernel layout [in, out]: 4 consecutive "
        "inputs, the pattern TFLite's sparse kernels run fast); magnitude ranks blocks by "
        "L2 norm, random draws blocks. Default: single weights.")
    floor_count: int = hparam(
        8, "No layer keeps fewer than max(floor_count, floor_fraction x its size) weights "
        "(what it cannot give goes to the others).")
    floor_fraction: float = hparam(0.005, "See --floor_count.")

    def floor(self):
        return Floor(self.floor_count, self.floor_fraction)

    def output_layers(self, model):
        """The output layer(s) of `model` (wrapped or not) for the output rate."""
        return kits.of(model).output_layers(model, self.output_layer)

    def selector(self):
        """The `Selector` (criterion, allocation, blocks, floor) of the method."""
        raise NotImplementedError(f"{type(self).__name__}: a method with an allocation "
                                  "implements selector() (docs/EXTENDING.md)")

    def reachable(self, mask, target_sparsity, output_layers):
        """Raises AllocationError unless this method's allocation can take the
        model to `target_sparsity` (a dry run on `mask`, before training)."""
        self.selector().allocation.rates(mask, 1.0 - target_sparsity, output_layers)

    def plan(self, mask, target_sparsity, steps_per_epoch, output_layers):
        self.reachable(mask, target_sparsity, output_layers)
        return super().plan(mask, target_sparsity, steps_per_epoch, output_layers)

    def check(self, target_sparsity):
        super().check(target_sparsity)
        self.floor()


@dataclasses.dataclass
class Selecting(Allocated, Seeded):
    """A criterion and an allocation choose what each pruning step removes."""
    criterion: str = hparam(
        "magnitude", "Score ranking the weights (the lowest go): magnitude, random, or one "
        "registered with tf_unilth.sparsity.register_criterion.")
    allocation: str = hparam(
        "uniform", "How the layers share a removal: uniform (output layer per "
        "--output_rate_scale), global (one threshold) or erk (Erdos-Renyi-Kernel).",
        choices=("uniform", "global", "erk"))
    selection: str = hparam(
        None, "Earlier name of a (criterion, allocation) pair: magnitude_layerwise, "
        "magnitude_global, random or block; overrides --criterion and --allocation.",
        choices=tuple(selection.NAMED))

    def selector(self):
        """The `Selector` these hyperparameters describe."""
        if self.selection is not None:
            return Selector.named(self.selection, block_size=self.block_size,
                                  output_rate_scale=self.output_rate_scale, seed=self.seed,
                                  floor=self.floor())
        return Selector(self.criterion, self.allocation, self.block_size,
                        self.output_rate_scale, self.seed, self.floor())

    def check(self, target_sparsity):
        super().check(target_sparsity)
        if self.selection is None:
            criteria.get(self.criterion)
            allocation.get(self.allocation)
        self.selector()  # block_size and global, output_rate_scale


@dataclasses.dataclass
class RandomTicket(Allocated, Seeded):
    """A random ticket: a seeded random mask, spread over the layers by an allocation."""
    allocation: str = hparam(
        "uniform", "Per-layer densities of the random ticket: uniform (output layer per "
        "--output_rate_scale) or erk (Erdos-Renyi-Kernel).", choices=("uniform", "erk"))

    def selector(self):
        return Selector("random", self.allocation, self.block_size, self.output_rate_scale,
                        self.seed, self.floor())

    def check(self, target_sparsity):
        super().check(target_sparsity)
        self.selector()
