"""`python -m benchmarks.serving`: the same as `python benchmarks/serving/run.py`."""

import sys

from benchmarks.serving.run import main

sys.exit(main())
