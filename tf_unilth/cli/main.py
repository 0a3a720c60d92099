"""The `tf-unilth` command: one absl program per subcommand.

    tf-unilth find-ticket --method=unilth --target_sparsity=0.9 --output_dir=runs/x
    tf-unilth export-tflite --ticket=runs/x/ticket.keras --output=runs/x/ticket.tflite
    tf-unilth stability --output_dir=runs/stability
    tf-unilth launch-workers --num_workers=2 -- --method=unilth --output_dir=runs/mw

`tf-unilth <command> --helpfull` lists a command's flags.
"""

import contextlib
import importlib
import os
import re
import sys
import tempfile

COMMANDS = {
    "find-ticket": ("tf_unilth.cli.find_ticket", "find a ticket with one of the methods"),
    "export-tflite": ("tf_unilth.cli.export_tflite",
                      "export a ticket to a sparse .tflite file, checked"),
    "stability": ("tf_unilth.cli.stability", "the rewinding / stability sweep"),
    "launch-workers": ("tf_unilth.cli.launch_workers",
                       "a multi-worker find-ticket on this machine"),
}


# What TensorFlow's C++ side writes to stderr while it loads and finds its
# devices, before absl logging starts: TF_CPP_MIN_LOG_LEVEL does not reach
# these lines (a missing CUDA driver is reported at info and error level on
# every CPU-only machine), so the command drops exactly these and nothing else.
STARTUP_LINE = re.compile(
    r"All log messages before absl::InitializeLog|cudart_stub\.cc|cuda_platform\.cc.*cuInit"
    r"|cuda_executor\.cc|cpu_feature_guard\.cc|To enable the following instructions"
    r"|oneDNN custom operations are on|rebuild TensorFlow with the appropriate compiler")


@contextlib.contextmanager
def tensorflow_startup_lines_dropped():
    """Runs the block with file descriptor 2 captured; afterwards writes back
    every captured line but TensorFlow's start-up lines (STARTUP_LINE), so an
    error raised meanwhile is still seen. A file-descriptor redirect, because
    these lines come from C++, not from Python's sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(True)
                    if not STARTUP_LINE.search(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def usage(prog="tf-unilth"):
    lines = [f"usage: {prog} <command> [flags]   ({prog} <command> --helpfull for its flags)",
             "", "commands:"]
    lines += [f"  {name:15s} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    prog = "tf-unilth"
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage(prog))
        return 0 if len(argv) >= 2 else 2
    command = argv[1]
    if command not in COMMANDS:
        print(f"{prog}: unknown command {command!r}.\n\n{usage(prog)}", file=sys.stderr)
        return 2
    # TensorFlow's C++ start-up lines are not what a user of the command wants
    # to read: the level is set before TensorFlow loads (the command's module
    # loads it), and what the level does not reach is dropped while it loads.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tensorflow_startup_lines_dropped():
        module = importlib.import_module(COMMANDS[command][0])
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        tf.config.list_physical_devices()  # the device probe, which reports CUDA
    return module.run([f"{prog} {command}", *argv[2:]]) or 0


if __name__ == "__main__":
    sys.exit(main())
