"""The `tf-unilth` command: one absl program per subcommand.

    tf-unilth find-ticket --method=unilth --target_sparsity=0.9 --output_dir=runs/x
    tf-unilth export-tflite --ticket=runs/x/ticket.keras --output=runs/x/ticket.tflite
    tf-unilth stability --output_dir=runs/stability
    tf-unilth launch-workers --num_workers=2 -- --method=unilth --output_dir=runs/mw

`tf-unilth <command> --helpfull` lists a command's flags.
"""

import importlib
import os
import sys

COMMANDS = {
    "find-ticket": ("tf_unilth.cli.find_ticket", "find a ticket with one of the methods"),
    "export-tflite": ("tf_unilth.cli.export_tflite",
                      "export a ticket to a sparse .tflite file, checked"),
    "stability": ("tf_unilth.cli.stability", "the rewinding / stability sweep"),
    "launch-workers": ("tf_unilth.cli.launch_workers",
                       "a multi-worker find-ticket on this machine"),
}


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
    # to read; set before TensorFlow loads (the command's module loads it).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    module = importlib.import_module(COMMANDS[command][0])
    return module.run([f"{prog} {command}", *argv[2:]]) or 0


if __name__ == "__main__":
    sys.exit(main())
