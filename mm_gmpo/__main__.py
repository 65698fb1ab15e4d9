import sys

from mm_gmpo.cli import main

if __name__ == "__main__":  # a worker process started with "spawn" re-imports this module
    sys.exit(main())
