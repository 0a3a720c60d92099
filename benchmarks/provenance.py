"""Which code a benchmark's results came from: the commit and any uncommitted
change to the measured paths, written into every results JSON."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git(*args):
    """`git args` in the repository's root; None where git cannot answer."""
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_info(paths=("tf_unilth", "examples"), key="uncommitted_changes_in_library"):
    """{"commit": HEAD, key: the `git status --porcelain` lines of `paths`}."""
    changed = git("status", "--porcelain", "--", *paths)
    return {"commit": git("rev-parse", "HEAD"), key: changed.splitlines() if changed else []}
