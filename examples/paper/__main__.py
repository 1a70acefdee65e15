"""``python -m examples.paper`` (from a checkout's root): list, run and sweep the paper's tasks.

``python examples/paper ...`` (the folder as a script, from anywhere) is the same command.
"""

import os
import sys

if __package__:
    from .cli import main
else:  # run as a folder: its parent (examples/) makes ``paper`` importable, as for the scripts
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from paper.cli import main

raise SystemExit(main())
