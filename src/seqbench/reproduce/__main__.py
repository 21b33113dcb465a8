import sys

from seqbench.reproduce.cli import main

sys.exit(main())
