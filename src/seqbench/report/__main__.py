"""``python -m seqbench.report <study>`` (``make report STUDY=<study>``)."""

import sys

from seqbench.report.cli import main

sys.exit(main())
