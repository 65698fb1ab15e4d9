"""Math suite (paper Table 1) for a checkpoint: `python eval/math_suite.py --model PATH --out DIR`.

A thin wrapper: the logic lives in ``mm_gmpo.evaluation`` (see eval/README.md); ``--help`` lists the options.
"""

import sys

from mm_gmpo.evaluation.cli import main_math_suite

if __name__ == "__main__":
    sys.exit(main_math_suite())
