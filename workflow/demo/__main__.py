"""``python -m workflow.demo``: see :mod:`workflow.demo.cli`."""

from workflow.demo.cli import main

main()
