"""``python -m gdfree`` runs the command line (as torchrun and schedulers launch it)."""

from gdfree.cli import main

main()
