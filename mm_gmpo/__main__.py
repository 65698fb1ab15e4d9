import sys

from mm_gmpo.cli import main

sys.exit(main())
