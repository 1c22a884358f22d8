"""`python worker.py`: the worker, for those who start it the way the original one was started.

    pip install -r requirements.txt && python worker.py

runs `python-worker run` from this checkout, with the same settings (README, Configuration);
extra arguments go to `run` (`python worker.py --processes 2`). The supported way is the
installed console script, `python-worker run` (deploy/install.sh, the Dockerfile): this file
only spares a checkout the install step.
"""

import os
import sys
from pathlib import Path

# The package is `python_worker`, which is src/ under its installed name: checkout/ holds that
# name as a symlink. Put first, it wins over an installed copy, so this runs this checkout. The
# supervisor's processes (`run --processes N`) find it through PYTHONPATH, as they run `python
# -m python_worker`.
CHECKOUT = str(Path(__file__).resolve().parent / "checkout")
sys.path.insert(0, CHECKOUT)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [CHECKOUT, *filter(None, [os.environ.get("PYTHONPATH")])]
)

from python_worker.bootstrap import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
