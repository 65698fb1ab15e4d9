"""Geometry3K / MathVision for a VL checkpoint: `python eval/geometry3k.py --model PATH --out DIR`.

A thin wrapper: the logic lives in ``mm_gmpo.evaluation`` (see eval/README.md); ``--help`` lists the options.
"""

import sys

from mm_gmpo.evaluation.cli import main_geometry

if __name__ == "__main__":
    sys.exit(main_geometry())
