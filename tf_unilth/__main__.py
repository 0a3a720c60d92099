"""`python -m tf_unilth <command> ...`: the `tf-unilth` command."""

import sys

from tf_unilth.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
