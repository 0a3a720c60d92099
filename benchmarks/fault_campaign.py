"""Fault campaign on the command line: kill -9 at random instants, damaged
state, bad input; does every search end as the uninterrupted one did?

For each method, one uninterrupted reference run, then `--trials` runs each
killed (SIGKILL, its whole process group) at a uniformly random instant of the
reference's wall time and started again with the same command until it
finishes. A trial passes when the resumed run's final numbers, masks digest
and round records (times aside) equal the reference's, and no round printed by
a killed attempt was trained again (every such round is printed "(restored)"
with the same numbers). Then the damaged-state variants (a killed run whose
newest snapshot's `.data` is truncated, its `.index` emptied, `progress.json`
truncated or deleted) must resume to the same end or stop with a one-line
error naming `--restart`; and bad command lines must stop with one `error:`
line before any file is written.

    python benchmarks/fault_campaign.py --data_dir=$TFDS_DATA_DIR

(With PYTHONPATH=<a copy of the checkout> it tests that copy, so the tree
can change while it runs; the JSON records which library and commit.)

Writes results/fault_campaign.json. Each method's runs hold `--lock`
(flock), so it takes turns with other benchmarks on the machine's cores.
"""

import contextlib
import fcntl
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", os.environ.get("TFDS_DATA_DIR"), "TFDS data dir with mnist.")
flags.DEFINE_list("methods", ["lth", "unilth", "dlth", "unidlth"], "Methods to kill.")
flags.DEFINE_integer("trials", 8, "Killed runs per method.")
flags.DEFINE_integer("seed", 0, "Seed of the kill instants.")
flags.DEFINE_string("work_dir", os.path.join(os.path.dirname(__file__), "runs", "fault_campaign"),
                    "Run directories (removed and recreated).")
flags.DEFINE_string("output", os.path.join(os.path.dirname(__file__), "results",
                                           "fault_campaign.json"), "The JSON written.")
flags.DEFINE_string("lock", "/tmp/tf_unilth_bench.lock", "flock file serializing the runs "
                    "with other benchmarks ('' for none).")

# --verbose=2: the round lines (and an epoch line each) are printed, so a
# round trained again after a kill shows.
COMMON = ["--train_limit=1800", "--validation_size=300", "--test_limit=500", "--batch_size=60",
          "--deterministic", "--verbose=2", "--target_sparsity=0.8"]
METHODS = {
    "lth": ["--method=lth", "--epochs_per_round=2", "--prune_rate=0.5"],
    "unilth": ["--method=unilth", "--epochs=16", "--patience=2"],
    "dlth": ["--method=dlth", "--epochs=8", "--finetune_epochs=4"],
    "unidlth": ["--method=unidlth", "--epochs=16", "--patience=2"],
}
TIME_KEYS = ("wall_seconds", "seconds")
ROUND_LINE = re.compile(r"^round\s+(\d+) \|.*?\|.*?\|(.*)$")


def _command(method, out):
    return [sys.executable, "-u", "-m", "tf_unilth", "find-ticket", *COMMON, *METHODS[method],
            f"--data_dir={FLAGS.data_dir}", f"--output_dir={out}"]


@contextlib.contextmanager
def _machine():
    """Holds --lock (flock) over a method's runs, so its kill instants are
    measured on a machine no other benchmark shares at that moment."""
    if not FLAGS.lock:
        yield
        return
    with open(FLAGS.lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(cmd, kill_after=None):
    """Runs `cmd`; with kill_after, SIGKILLs it (its process group) that many
    seconds after its training started (its "Execution:" line, printed right
    before the first fit), if still running. Returns (killed, returncode,
    stdout, stderr, seconds)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    if kill_after is None:
        out, err = proc.communicate()
        return False, proc.returncode, out, err, time.time() - start
    lines, errors, killed = [], [], [False]
    timer = threading.Timer(kill_after, lambda: (killed.__setitem__(0, True),
                                                 os.killpg(proc.pid, signal.SIGKILL)))
    drain = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)
    drain.start()
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Execution:") and not timer.is_alive():
            timer.start()
    proc.wait()
    timer.cancel()
    drain.join(5)
    return killed[0], proc.returncode, "".join(lines), "".join(errors), time.time() - start


def _rounds_printed(stdout):
    """{round: the line's numbers} of the round lines, and which were restored."""
    printed, restored = {}, set()
    for line in stdout.splitlines():
        m = ROUND_LINE.match(line.strip())
        if m:
            body = line.split("|")[1:4]  # sparsity, val, test: the numbers that must not move
            printed[int(m.group(1))] = " | ".join(p.strip() for p in body)
            if line.rstrip().endswith("(restored)"):
                restored.add(int(m.group(1)))
    return printed, restored


def _results(out):
    with open(os.path.join(out, "results.json")) as f:
        r = json.load(f)
    rounds = [{k: v for k, v in rec.items() if k not in TIME_KEYS} for rec in r["rounds"]]
    return {"final": r["final"], "digest": (r.get("distribution") or {}).get("masks_digest"),
            "rounds": rounds, "training_seconds": r["total"]["wall_seconds"]}


def _finish(cmd, attempts):
    """Starts `cmd` again, not killed, and appends that attempt's record."""
    _, code, out, err, seconds = _run(cmd)
    attempts.append({"killed": False, "returncode": code, "seconds": round(seconds, 1),
                     "stdout": out, "stderr_tail": err[-800:]})


def _compare(method, reference, out, attempts):
    """The trial's verdict against the reference."""
    verdict = {"finished": attempts[-1]["returncode"] == 0}
    if not verdict["finished"]:
        verdict["error"] = attempts[-1]["stderr_tail"]
        return verdict
    got = _results(out)
    verdict["same_final"] = got["final"] == reference["final"]
    verdict["final_max_abs_diff"] = max(
        abs(got["final"][k] - reference["final"][k]) for k in reference["final"])
    verdict["same_digest"] = got["digest"] == reference["digest"]
    verdict["same_rounds"] = got["rounds"] == reference["rounds"]
    verdict["restored_rounds"] = sorted(
        r for a in attempts for r in _rounds_printed(a["stdout"])[1])
    # A round printed by a killed attempt must come back restored, unchanged.
    redone = []
    seen = {}
    for attempt in attempts:
        printed, restored = _rounds_printed(attempt["stdout"])
        for r, numbers in printed.items():
            if r in seen and (r not in restored or numbers != seen[r]):
                redone.append(r)
            seen.setdefault(r, numbers)
    verdict["rounds_redone"] = sorted(set(redone))
    verdict["ok"] = (verdict["same_final"] and verdict["same_digest"] and verdict["same_rounds"]
                     and not redone)
    return verdict


def _snapshot_files(state):
    with open(os.path.join(state, "progress.json")) as f:
        progress = json.load(f)
    if not progress.get("fits"):
        return None
    latest = progress["fits"][str(max(int(i) for i in progress["fits"]))]
    prefix = os.path.join(state, latest["snapshot"]["checkpoint"])
    folder = os.path.dirname(prefix)
    data = [os.path.join(folder, f) for f in os.listdir(folder)
            if f.startswith(os.path.basename(prefix) + ".data")]
    return prefix + ".index", data


def _damage(state, how):
    files = _snapshot_files(state) if how in ("truncate_data", "empty_index") else None
    if how == "truncate_data":
        for path in files[1]:
            with open(path, "r+b") as f:
                f.truncate(max(0, os.path.getsize(path) // 2))
    elif how == "empty_index":
        open(files[0], "w").close()
    elif how == "truncate_progress":
        path = os.path.join(state, "progress.json")
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif how == "delete_progress":
        os.remove(os.path.join(state, "progress.json"))


def _kill_trials(method, reference, seconds, rng):
    """Kills at instants uniform over the reference's training, counted from
    the trial's own training start (its start-up, imports and data loading,
    is left out: a kill there tests nothing)."""
    trials = []
    for t in range(FLAGS.trials):
        out = os.path.join(FLAGS.work_dir, f"{method}_kill{t}")
        shutil.rmtree(out, ignore_errors=True)
        cmd = _command(method, out)
        at = rng.uniform(0.02, 0.98) * reference["training_seconds"]
        killed, code, stdout, err, took = _run(cmd, kill_after=at)
        attempts = [{"killed": killed, "returncode": code, "seconds": round(took, 1),
                     "stdout": stdout, "stderr_tail": err[-800:]}]
        if killed:
            _finish(cmd, attempts)
        verdict = _compare(method, reference, out, attempts)
        trials.append({"trial": t, "kill_at_seconds": round(at, 1), "killed": killed,
                       "attempts": len(attempts), **verdict,
                       "notes": [line for a in attempts for line in a["stdout"].splitlines()
                                 if "snapshot" in line.lower() or "lock" in line.lower()]})
        print(f"{method} kill {t}: at {at:.1f} s, killed={killed}, ok={verdict.get('ok')}",
              flush=True)
    return trials


def _damage_trials(method, reference, seconds):
    """Kills at half the training, damages the newest snapshot, resumes."""
    trials = []
    for how in ("truncate_data", "empty_index", "truncate_progress", "delete_progress"):
        out = os.path.join(FLAGS.work_dir, f"{method}_{how}")
        shutil.rmtree(out, ignore_errors=True)
        cmd = _command(method, out)
        killed, code, stdout, err, _ = _run(cmd, kill_after=0.5 * reference["training_seconds"])
        entry = {"damage": how, "killed": killed}
        state = os.path.join(out, "state")
        if not killed or not os.path.exists(os.path.join(state, "progress.json")):
            entry["skipped"] = "no state to damage (the run ended or had not snapshotted)"
            trials.append(entry)
            continue
        try:
            _damage(state, how)
        except (TypeError, OSError) as e:
            entry["skipped"] = f"nothing to damage: {e}"
            trials.append(entry)
            continue
        attempts = [{"killed": True, "returncode": code, "stdout": stdout, "stderr_tail": ""}]
        _finish(cmd, attempts)
        verdict = _compare(method, reference, out, attempts)
        said = [line for line in attempts[-1]["stdout"].splitlines() + attempts[-1][
            "stderr_tail"].splitlines() if "snapshot" in line.lower() or "progress" in line.lower()
            or line.startswith("error:")]
        one_line = (not verdict["finished"] and "Traceback" not in verdict.get("error", "")
                    and "--restart" in verdict.get("error", ""))
        entry.update(verdict, said=said, clear_error=one_line,
                     ok=verdict.get("ok", False) or one_line)
        trials.append(entry)
        print(f"{method} {how}: ok={entry['ok']} ({'resumed' if verdict['finished'] else 'error'})",
              flush=True)
    return trials


BAD_COMMANDS = {
    "dlth finetune_epochs=0": ["--method=dlth", "--epochs=4", "--finetune_epochs=0"],
    "lth rounds=0": ["--method=lth", "--rounds=0"],
    "negative learning rate": ["--method=dense", "--epochs=1", "--learning_rate=-0.1"],
    "negative patience": ["--method=unilth", "--patience=-1"],
    "prune_rate 1.5": ["--method=lth", "--prune_rate=1.5"],
    "epochs 0": ["--method=dense", "--epochs=0"],
    "target_sparsity 1": ["--method=lth", "--target_sparsity=1"],
    "unknown method": ["--method=nope"],
    "batch_size 0": ["--method=dense", "--batch_size=0"],
}


def _bad_inputs():
    found = []
    for name, flags_ in BAD_COMMANDS.items():
        out = os.path.join(FLAGS.work_dir, "bad_input")
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "tf_unilth", "find-ticket", f"--data_dir={FLAGS.data_dir}",
               "--train_limit=600", f"--output_dir={out}", *flags_]
        _, code, _, err, _ = _run(cmd)
        errors = [line for line in err.splitlines() if line.startswith("error:")
                  or line.startswith("FATAL Flags parsing error")]
        found.append({"case": name, "returncode": code, "error": errors[:1],
                      "traceback": "Traceback" in err, "wrote_files": os.path.exists(out),
                      "ok": code not in (0, None) and len(errors) == 1
                      and "Traceback" not in err and not os.path.exists(out)})
        print(f"bad input {name}: {found[-1]['error']}", flush=True)
    return found


def _git_commit(path):
    done = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False)
    return done.stdout.strip() or None


def _write(report):
    os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
    with open(FLAGS.output + ".tmp", "w") as f:
        json.dump(report, f, indent=1)
    os.replace(FLAGS.output + ".tmp", FLAGS.output)


def main(argv):
    del argv
    rng = random.Random(FLAGS.seed)
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    import tf_unilth  # pylint: disable=import-outside-toplevel
    report = {"library": os.path.dirname(tf_unilth.__file__),
              "library_commit": _git_commit(os.path.dirname(tf_unilth.__file__)),
              "common_flags": COMMON, "method_flags": METHODS, "methods": {},
              "bad_inputs": _bad_inputs()}
    if os.path.exists(FLAGS.output):  # a run of some methods keeps the others' results
        with open(FLAGS.output) as f:
            earlier = json.load(f)
        report["methods"] = {m: {**r, "library_commit": r.get("library_commit",
                                                              earlier.get("library_commit")),
                                 "common_flags": r.get("common_flags", earlier["common_flags"])}
                             for m, r in earlier.get("methods", {}).items()
                             if m not in FLAGS.methods}
    _write(report)
    for method in FLAGS.methods:
        with _machine():  # a method's reference and trials on the same, unshared machine
            out = os.path.join(FLAGS.work_dir, f"{method}_reference")
            shutil.rmtree(out, ignore_errors=True)  # else a finished one is only read back
            _, code, stdout, err, seconds = _run(_command(method, out))
            if code != 0:
                raise RuntimeError(f"The reference {method} run failed:\n{err[-2000:]}")
            reference = _results(out)
            print(f"{method} reference: {seconds:.1f} s, final {reference['final']}",
                  flush=True)
            kills = _kill_trials(method, reference, seconds, rng)
            damaged = _damage_trials(method, reference, seconds)
        report["methods"][method] = {
            "library_commit": report["library_commit"], "common_flags": COMMON,
            "reference_seconds": round(seconds, 1),
            "reference_training_seconds": round(reference["training_seconds"], 1),
            "reference_final": reference["final"],
            "kill_trials": len(kills), "killed": sum(t["killed"] for t in kills),
            "kills_ok": sum(bool(t.get("ok")) for t in kills if t["killed"]),
            "kills": kills, "damaged": damaged}
        _write(report)  # after every method: nothing computed is lost
    for method, r in report["methods"].items():
        print(f"{method}: {r['killed']}/{r['kill_trials']} killed, {r['kills_ok']} resumed "
              f"to the reference; damaged: "
              f"{sum(bool(d.get('ok')) for d in r['damaged'])}/{len(r['damaged'])} ok")
    print(f"bad inputs: {sum(b['ok'] for b in report['bad_inputs'])}/"
          f"{len(report['bad_inputs'])} one clear line, nothing written")
    print(f"Wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
