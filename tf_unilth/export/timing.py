"""Latency measurement for benchmarks only (benchmarks/tflite_export.py and
`to_tflite(..., latency_runs=N)`); nothing else in the library uses it.

Batch-1 wall-clock timing of .tflite files in the LiteRT interpreter, measured
round robin so machine noise hits every file alike. The numbers depend on the
machine and its load: report them, do not check them in tests.
"""

import statistics
import time

import numpy as np

from tf_unilth.export.interpreter import load_interpreter


def latency(contents, x=None, rounds=20, runs=100, warmup=50, num_threads=1, resolvers=None):
    """Median latency per example (microseconds, batch 1) of several files.

    `contents`: {name: bytes or path}. All interpreters are loaded first and
    measured round robin -- each round runs every file `runs` times, each
    invoke timed with perf_counter -- so machine noise hits all alike. Returns
    {name: {"median_us", "round_medians_us", "resolver"}}. `resolvers`:
    {name: resolver} for files that must run with a given resolver (see
    `load_interpreter`; e.g. `ExportReport.resolver`).
    """
    resolvers = resolvers or {}
    loaded = {}
    for name, content in contents.items():
        interpreter, resolver, _ = load_interpreter(content, num_threads, batch_size=1,
                                                    resolver=resolvers.get(name))
        inp = interpreter.get_input_details()[0]
        sample = (np.random.default_rng(0).random(inp["shape"]) if x is None
                  else np.asarray(x)[:1]).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], sample)
        for _ in range(warmup):
            interpreter.invoke()
        loaded[name] = (interpreter, resolver)
    times = {name: [] for name in loaded}
    rounds_med = {name: [] for name in loaded}
    for _ in range(rounds):
        for name, (interpreter, _) in loaded.items():
            invoke, clock = interpreter.invoke, time.perf_counter
            spent = []
            for _ in range(runs):
                start = clock()
                invoke()
                spent.append(clock() - start)
            times[name].extend(spent)
            rounds_med[name].append(statistics.median(spent) * 1e6)
    return {name: {"median_us": statistics.median(times[name]) * 1e6,
                   "round_medians_us": rounds_med[name], "resolver": loaded[name][1]}
            for name in loaded}


def speedup(latencies, reference, name):
    """Median over rounds of reference time / name time (paired per round)."""
    ref, other = latencies[reference]["round_medians_us"], latencies[name]["round_medians_us"]
    return statistics.median(r / o for r, o in zip(ref, other))
