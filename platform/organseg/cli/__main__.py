"""``python -m organseg.cli`` runs the command line (what the ``organseg`` script calls)."""

from organseg.cli import main

main()
