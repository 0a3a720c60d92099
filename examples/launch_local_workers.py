"""N workers of a multi-worker search on this machine: `tf-unilth launch-workers`.

    python examples/launch_local_workers.py --num_workers=2 -- --method=unilth \
        --output_dir=runs/unilth_mw
"""

import sys

from tf_unilth.cli import launch_workers

if __name__ == "__main__":
    sys.exit(launch_workers.run())
