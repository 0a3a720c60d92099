"""Errors on the command line: one clear line for the ones raised on purpose.

An error the library (or the program) raises on purpose names the problem
and the fix; its traceback only hides that line, so it is printed alone as
`error: <message>` with a hint to --helpfull, exit status 1. An error raised
anywhere else (inside TensorFlow, a bug) keeps its traceback; so does every
error when asked for (--verbose=3).
"""

import contextlib
import os
import sys
import traceback

class UsageError(ValueError):
    """A command line that cannot run; printed as one `error:` line like every
    error raised on purpose (absl's own UsageError prints the whole usage)."""


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def raised_on_purpose(error):
    """True when `error` was raised by tf_unilth's own code (its last frame is ours)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(_PACKAGE + os.sep)


@contextlib.contextmanager
def one_line(show_traceback=lambda: False):
    try:
        yield
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # pylint: disable=broad-except
        if show_traceback() or not raised_on_purpose(error):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        # The library names the hyperparameters at fault; their flags are ours to add.
        names = getattr(error, "hyperparameters", ())
        if names:
            message += f" (flag{'s' * (len(names) > 1)} {', '.join('--' + n for n in names)})"
        print(f"error: {message}\n(see --helpfull for every flag; --verbose=3 shows where "
              "it came from)", file=sys.stderr)
        sys.exit(1)
