"""Start a multi-worker ticket search on this machine: N workers on 127.0.0.1.

    tf-unilth launch-workers --num_workers=2 -- \\
        --method=unilth --target_sparsity=0.9 --output_dir=runs/unilth_mw

Picks N free ports, gives each worker its TF_CONFIG (worker i of N; worker 0
is the chief), and runs `tf-unilth find-ticket --distribution=multi_worker`
with every other argument passed through. The workers' output is relayed line
by line with a "[worker i]" prefix. When a worker fails (or is killed), the
others are stopped too, since a multi-worker job cannot go on without it, and
the launcher exits non-zero; starting the same command again resumes the
search from the chief's last snapshot in --output_dir/state.

Every worker it started is stopped on every way out: a normal end, a failure,
a signal (SIGINT, SIGTERM, SIGHUP), a broken output pipe (`| head`), an
exception while starting them; and on Linux a worker is also told to stop by
the kernel if the launcher itself dies (parent-death signal), so none is
left waiting for a peer that will never come.

Exit status: 0 when every worker succeeded, else the first failing worker's
status (1 for a signal or the --timeout).
"""

import argparse
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # prctl(2)


def free_ports(count):
    """`count` distinct ports that were free on 127.0.0.1 a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _die_with_parent():
    """In the child, before exec: killed when the launcher dies (Linux). SIGKILL,
    because a worker waiting for a peer ignores SIGTERM."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass  # not Linux: the launcher's own handlers still stop the workers


def _relay(stream, prefix, lock, broken):
    for line in iter(stream.readline, ""):
        with lock:
            try:
                sys.stdout.write(f"{prefix} {line}")
                sys.stdout.flush()
            except (BrokenPipeError, OSError):
                broken.set()  # nobody reads us any more: stop everything
    stream.close()


def _stop(procs, grace):
    """SIGTERM the workers still running, SIGKILL those alive after `grace` s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + grace
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _say(log, text):
    try:
        log(text, flush=True)
    except (BrokenPipeError, OSError):
        pass


def command(passthrough):
    """The command line of one worker."""
    return [sys.executable, "-u", "-m", "tf_unilth", "find-ticket",
            "--distribution=multi_worker", *passthrough]


def launch(num_workers, passthrough, timeout=None, cmd=None, grace=10.0, log=print):
    """Runs the workers; returns the exit status (see the module doc)."""
    ports = free_ports(num_workers)
    lock, broken = threading.Lock(), threading.Event()
    procs, relays = [], []
    status = 0

    def on_signal(signum, frame):
        del frame
        raise SystemExit(128 + signum)

    handled = [s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None))
               if s is not None]
    previous = {s: signal.signal(s, on_signal) for s in handled}
    try:
        for i in range(num_workers):  # inside the try: a failure here stops those started
            env = dict(os.environ, TF_CONFIG=tf_config(ports, i))
            proc = subprocess.Popen((cmd or command)(passthrough), env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    bufsize=1, preexec_fn=_die_with_parent)
            procs.append(proc)
            _say(log, f"[launcher] worker {i} pid {proc.pid} on 127.0.0.1:{ports[i]}"
                      f"{' (chief)' if i == 0 else ''}")
            relay = threading.Thread(target=_relay, args=(proc.stdout, f"[worker {i}]", lock,
                                                          broken), daemon=True)
            relay.start()
            relays.append(relay)
        start = time.time()
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i, code = failed[0]
                _say(log, f"[launcher] worker {i} exited with status {code}; stopping the "
                          "others.")
                status = code if code > 0 else 1
                break
            if all(c == 0 for c in codes):
                break
            if broken.is_set():
                status = 1
                break
            if timeout and time.time() - start > timeout:
                _say(log, f"[launcher] timeout after {timeout:.0f} s; stopping the workers.")
                status = 1
                break
            time.sleep(0.2)
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 1
        _say(log, f"[launcher] stopped (status {status}); stopping the workers.")
    finally:
        _stop(procs, grace)
        for relay in relays:
            relay.join(5)
        for s, handler in previous.items():
            signal.signal(s, handler)
    if status == 0:
        _say(log, f"[launcher] all {num_workers} workers finished.")
    return status


def run(argv=None):
    argv = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog=argv[0], description=__doc__.split("\n\n")[0],
        epilog="Every other argument (after --) goes to `tf-unilth find-ticket`.")
    parser.add_argument("--num_workers", type=int, default=2, help="Workers to start.")
    parser.add_argument("--timeout", type=float, default=None,
                        help="Stop every worker and fail after this many seconds.")
    args, passthrough = parser.parse_known_args(argv[1:])
    passthrough = [a for a in passthrough if a != "--"]
    if args.num_workers < 1:
        parser.error(f"--num_workers must be >= 1, got {args.num_workers}.")
    if any(a.startswith("--distribution") for a in passthrough):
        parser.error("--distribution is set by the launcher (multi_worker); drop it.")
    return launch(args.num_workers, passthrough, timeout=args.timeout)


main = run

if __name__ == "__main__":
    sys.exit(run())
