"""`python -m alignlab ...`: the `alignlab` command, for launchers that start a module
(``accelerate launch -m alignlab train run.yaml``, ``torchrun -m alignlab train run.yaml``)."""

import sys

from alignlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
