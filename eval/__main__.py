"""``python -m eval ...`` is ``hyrec eval ...``."""

import sys

from hyrec.cli import app

if __name__ == "__main__":
    app(["eval", *sys.argv[1:]], prog_name="python -m eval")
