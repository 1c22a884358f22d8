"""`python -m python_worker`: the same as the `python-worker` command."""

import sys

from python_worker.bootstrap import main

sys.exit(main())
