"""The comparison suite from the benchmarks folder: the same as `qflow bench`.

Run: python benchmarks/run.py SUITE [--quick] [--out DIR] [--time-budget S] ...
     (SUITE: dims, bosonic, engines; see qflow_jax/apps/bench/suites/)
"""

import sys

from qflow_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
