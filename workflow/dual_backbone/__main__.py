"""``python -m workflow.dual_backbone train|predict|embed|pairs``: see :mod:`workflow.dual_backbone.cli`."""

from workflow.dual_backbone.cli import main

main()
