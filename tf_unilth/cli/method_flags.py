"""Command-line flags generated from the registered methods' fields.

One absl flag per hyperparameter name across all methods (a name several
methods share is one flag); its help says what it is and each method's
default, so `--helpfull` shows the value a run will use. A flag left unset
keeps the method's default; a flag the chosen method does not have is an
error.
"""

import dataclasses
import importlib
import importlib.util
import os
import sys

from absl import flags

from tf_unilth import methods

# Fields set from the command line's own flags rather than from a method flag.
SHARED = {"seed"}


def _kind(field):
    kind = field.type
    if isinstance(kind, str):  # postponed annotations
        kind = {"int": int, "float": float, "str": str, "bool": bool, "tuple": tuple}.get(kind)
    return kind


def method_fields():
    """{field name: [(method name, field)]} over every registered method."""
    found = {}
    for name in methods.names():
        for field in dataclasses.fields(methods.get(name)):
            if field.name not in SHARED:
                found.setdefault(field.name, []).append((name, field))
    return found


def _default_text(field):
    value = field.default
    if value is None:
        return "derived"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return repr(value) if isinstance(value, str) else str(value)


def define(flag_values=flags.FLAGS):
    """Defines one flag per method hyperparameter (idempotent)."""
    for name, owners in sorted(method_fields().items()):
        if name in flag_values:
            continue
        field = owners[0][1]
        helps = {}
        for m, f in owners:
            helps.setdefault(f.metadata.get("help", ""), []).append(m)
        text = " | ".join(h if len(helps) == 1 else f"{', '.join(ms)}: {h}"
                          for h, ms in helps.items())
        defaults = "; ".join(f"{m} {_default_text(f)}" for m, f in owners)
        text = f"{text} [default: {defaults}]"
        kind = _kind(field)
        choices = set()
        for _, f in owners:
            choices |= set(f.metadata.get("choices") or ())
        if kind is bool:
            flags.DEFINE_boolean(name, None, text, flag_values=flag_values)
        elif kind is int:
            flags.DEFINE_integer(name, None, text, flag_values=flag_values)
        elif kind is float:
            flags.DEFINE_float(name, None, text, flag_values=flag_values)
        elif kind is tuple:
            flags.DEFINE_list(name, None, text, flag_values=flag_values)
        elif choices and all(f.metadata.get("choices") for _, f in owners):
            flags.DEFINE_enum(name, None, sorted(choices), text, flag_values=flag_values)
        else:
            flags.DEFINE_string(name, None, text, flag_values=flag_values)


def values(method, flag_values=flags.FLAGS):
    """The hyperparameters of `method` given on the command line (others keep
    the method's defaults); raises ValueError for a flag `method` lacks."""
    fields = {f.name: f for f in dataclasses.fields(methods.get(method))}
    args, unused = {}, []
    for name, owners in method_fields().items():
        flag = flag_values[name]
        if name not in fields:
            if flag.present:
                unused.append(name)
            continue
        if flag.value is None:
            continue
        value = flag.value
        if _kind(fields[name]) is tuple:
            try:
                value = tuple(int(v) for v in value)
            except ValueError:
                raise ValueError(f"--{name} takes comma-separated ints like 4,1; got "
                                 f"{','.join(flag.value)}.") from None
        args[name] = value
    if unused:
        raise ValueError(f"--{', --'.join(sorted(unused))} not used by --method={method} "
                         f"(its hyperparameters: {', '.join(sorted(fields))}).")
    if "seed" in fields:
        args["seed"] = flag_values["seed"].value
    return args


def load_plugins(argv):
    """Imports the modules named by `--plugin=<file.py or module>` in `argv`
    (before the flags are defined, so the methods they register get flags)."""
    loaded = []
    for arg in argv:
        if not arg.startswith("--plugin="):
            continue
        for target in arg.split("=", 1)[1].split(","):
            if target.endswith(".py"):
                path = os.path.abspath(target)
                if not os.path.exists(path):
                    raise SystemExit(f"--plugin={target}: no such file.")
                name = "tf_unilth_plugin_" + os.path.splitext(os.path.basename(path))[0]
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(target)
            loaded.append(target)
    return loaded
