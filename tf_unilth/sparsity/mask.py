"""`Mask`: which prunable weights survive, as a value.

A mask maps a key, `"<layer name>/<index of the prunable weight>"`, to a bool
array (True = the weight is kept). `Mask.key` is the one place keys are made.
Masks are immutable; operations return new masks. Removal sets (the weights a
pruning step removes) are masks too, with True = removed.
"""

import collections.abc
import hashlib

import numpy as np


class Mask(collections.abc.Mapping):
    """key -> bool array, True where the weight survives (or, for a removal
    set, where it is removed). Iterates in model order."""

    def __init__(self, arrays):
        self._arrays = {}
        for key, value in dict(arrays).items():
            array = np.array(value, dtype=bool)  # a copy: masks are values
            array.flags.writeable = False
            self._arrays[str(key)] = array

    # -- keys ---------------------------------------------------------------
    @staticmethod
    def key(layer_name, index):
        """The key of prunable weight `index` of layer `layer_name`."""
        return f"{layer_name}/{int(index)}"

    @staticmethod
    def layer_name(key):
        return key.rsplit("/", 1)[0]

    # -- Mapping ------------------------------------------------------------
    def __getitem__(self, key):
        return self._arrays[key]

    def __iter__(self):
        return iter(self._arrays)

    def __len__(self):
        return len(self._arrays)

    def __eq__(self, other):
        if not isinstance(other, collections.abc.Mapping) or list(self) != list(other):
            return False
        return all(np.array_equal(self[k], np.asarray(other[k], bool)) for k in self)

    def __hash__(self):
        return hash(self.digest())

    def __repr__(self):
        return (f"Mask({len(self)} weights, {self.count:,} entries, "
                f"sparsity {self.sparsity:.4f}, digest {self.digest()})")

    @classmethod
    def ones(cls, shapes):
        """Everything kept: `shapes` maps key -> shape."""
        return cls({k: np.ones(s, bool) for k, s in shapes.items()})

    @classmethod
    def empty_like(cls, mask):
        """All False, shaped like `mask` (an empty removal set)."""
        return cls({k: np.zeros(v.shape, bool) for k, v in mask.items()})

    # -- counts -------------------------------------------------------------
    @property
    def count(self):
        """Number of entries (prunable weights)."""
        return int(sum(a.size for a in self._arrays.values()))

    @property
    def alive(self):
        """Number of True entries."""
        return int(sum(int(a.sum()) for a in self._arrays.values()))

    @property
    def zeros(self):
        return self.count - self.alive

    @property
    def sparsity(self):
        """Fraction of False entries (0 for an empty mask)."""
        return self.zeros / self.count if self.count else 0.0

    @property
    def density(self):
        return 1.0 - self.sparsity

    def sizes(self):
        return {k: int(a.size) for k, a in self._arrays.items()}

    def alive_counts(self):
        return {k: int(a.sum()) for k, a in self._arrays.items()}

    def report(self):
        """Per-weight and total sparsity (the form results.json uses)."""
        layers = {}
        for key, array in self._arrays.items():
            n, z = array.size, int(array.size - array.sum())
            layers[key] = {"count": n, "zeros": z, "sparsity": z / n, "density": 1 - z / n}
        return {"layers": layers, "count": self.count, "zeros": self.zeros,
                "sparsity": self.sparsity, "density": self.density}

    def empty_layers(self):
        """Keys whose weights are all removed."""
        return [k for k, a in self._arrays.items() if a.size and not a.any()]

    # -- algebra ------------------------------------------------------------
    def _check_same_keys(self, other):
        if list(self) != list(other):
            raise ValueError(f"Masks over different weights: {list(self)} vs {list(other)}.")
        for k in self:
            if self[k].shape != np.shape(other[k]):
                raise ValueError(f"Mask {k!r} has shape {self[k].shape}, the other "
                                 f"{np.shape(other[k])}.")

    def remove(self, removal):
        """This mask with the entries of `removal` (True = remove) removed.
        Keys missing from `removal` are kept as they are."""
        unknown = set(removal) - set(self)
        if unknown:
            raise KeyError(f"Unknown mask keys {sorted(unknown)}; known: {list(self)}.")
        return Mask({k: a & ~np.asarray(removal[k], bool) if k in removal else a
                     for k, a in self._arrays.items()})

    def __and__(self, other):
        self._check_same_keys(other)
        return Mask({k: a & np.asarray(other[k], bool) for k, a in self._arrays.items()})

    def removed_by(self, later):
        """The removal set that takes this mask to `later` (entries kept here,
        removed there)."""
        self._check_same_keys(later)
        return Mask({k: a & ~np.asarray(later[k], bool) for k, a in self._arrays.items()})

    def fidelity(self, removed):
        """|self & removed| / |self| for a selected set `self` and the set a step
        actually removed (1.0 when nothing was selected)."""
        n = self.alive
        if n == 0:
            return 1.0
        agree = sum(int(np.sum(self[k] & np.asarray(removed[k], bool))) for k in self)
        return agree / n

    # -- identity -----------------------------------------------------------
    def digest(self):
        """A 14-hex-digit SHA-256 digest of keys and entries: equal digests, same mask."""
        data = b"|".join(k.encode() + a.tobytes() for k, a in self._arrays.items())
        return f"{int.from_bytes(hashlib.sha256(data).digest()[:7], 'big'):014x}"

    def save(self, path):
        """Writes the mask as an .npz (keys in order)."""
        np.savez(path, __keys__=np.array(list(self)), **{
            f"m{i}": a for i, a in enumerate(self._arrays.values())})

    @classmethod
    def load(cls, path):
        with np.load(path) as f:
            keys = [str(k) for k in f["__keys__"]]
            return cls({k: f[f"m{i}"] for i, k in enumerate(keys)})
