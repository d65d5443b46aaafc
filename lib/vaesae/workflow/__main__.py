"""``python -m vaesae.workflow``: what ``./run_all.sh`` runs (:func:`vaesae.workflow.run.main`)."""

import sys

from .run import main

sys.exit(main())
