"""Paper-shaped table from evaluation folders: `python eval/tables.py --compare DIR_A DIR_B --out table.md`.

A thin wrapper: the logic lives in ``mm_gmpo.evaluation`` (see eval/README.md); ``--help`` lists the options.
"""

import sys

from mm_gmpo.evaluation.cli import main_tables

if __name__ == "__main__":
    sys.exit(main_tables())
