"""Start a multi-worker ticket search on this machine: N workers on 127.0.0.1.

    python examples/launch_local_workers.py --num_workers=2 -- \
        --method=unilth --target_sparsity=0.9 --output_dir=runs/unilth_mw

Picks N free ports, gives each worker its TF_CONFIG (worker i of N; worker 0
is the chief), and runs examples/find_ticket.py --distribution=multi_worker
with every other argument passed through. The workers' output is relayed line
by line with a "[worker i]" prefix. When a worker fails (or is killed), the
others are stopped too, since a multi-worker job cannot go on without it, and
the launcher exits non-zero; starting the same command again resumes the
search from the chief's last snapshot in --output_dir/state.

Exit status: 0 when every worker succeeded, else the first failing worker's
status (1 for a signal or the --timeout).
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FIND_TICKET = os.path.join(HERE, "find_ticket.py")


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


def _relay(stream, prefix, lock):
    for line in iter(stream.readline, ""):
        with lock:
            sys.stdout.write(f"{prefix} {line}")
            sys.stdout.flush()
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


def launch(num_workers, passthrough, timeout=None, script=FIND_TICKET, grace=10.0,
           log=print):
    """Runs the workers; returns the exit status (see the module doc)."""
    ports = free_ports(num_workers)
    lock = threading.Lock()
    procs, relays = [], []
    for i in range(num_workers):
        env = dict(os.environ, TF_CONFIG=tf_config(ports, i))
        cmd = [sys.executable, "-u", script, "--distribution=multi_worker", *passthrough]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        procs.append(proc)
        log(f"[launcher] worker {i} pid {proc.pid} on 127.0.0.1:{ports[i]}"
            f"{' (chief)' if i == 0 else ''}", flush=True)
        relay = threading.Thread(target=_relay, args=(proc.stdout, f"[worker {i}]", lock),
                                 daemon=True)
        relay.start()
        relays.append(relay)

    def on_signal(signum, frame):
        del frame
        _stop(procs, grace)
        sys.exit(128 + signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    status, start = 0, time.time()
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i, code = failed[0]
                log(f"[launcher] worker {i} exited with status {code}; stopping the others.",
                    flush=True)
                status = code if code > 0 else 1
                break
            if all(c == 0 for c in codes):
                break
            if timeout and time.time() - start > timeout:
                log(f"[launcher] timeout after {timeout:.0f} s; stopping the workers.",
                    flush=True)
                status = 1
                break
            time.sleep(0.2)
    finally:
        _stop(procs, grace)
        for relay in relays:
            relay.join(5)
        for s, handler in previous.items():
            signal.signal(s, handler)
    if status == 0:
        log(f"[launcher] all {num_workers} workers finished.", flush=True)
    return status


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Every other argument (after --) goes to examples/find_ticket.py.")
    parser.add_argument("--num_workers", type=int, default=2, help="Workers to start.")
    parser.add_argument("--timeout", type=float, default=None,
                        help="Stop every worker and fail after this many seconds.")
    args, passthrough = parser.parse_known_args(argv)
    passthrough = [a for a in passthrough if a != "--"]
    if args.num_workers < 1:
        parser.error(f"--num_workers must be >= 1, got {args.num_workers}.")
    if any(a.startswith("--distribution") for a in passthrough):
        parser.error("--distribution is set by the launcher (multi_worker); drop it.")
    return launch(args.num_workers, passthrough, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
