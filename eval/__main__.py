"""``python -m eval ...`` is ``hyrec eval ...``; ``python -m eval bench ...`` is
``hyrec bench ...``."""

import sys

from eval.cli import app

if __name__ == "__main__":
    args = sys.argv[1:]
    app(args if args[:1] == ["bench"] else ["eval", *args], prog_name="python -m eval")
