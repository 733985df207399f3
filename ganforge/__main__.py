"""``python -m ganforge`` (what ``accelerate launch -m ganforge`` runs)."""
import sys

from ganforge.cli import main

sys.exit(main())
