"""Open-set individual animal re-identification: the stage modules of the Snakemake workflow.

One module per stage; each exposes pure functions on arrays and tables (imported by the tests)
and a small ``main()`` that the matching rule calls with ``python -m workflow.<module>``.
"""

__version__ = "0.1.0"

NEW_INDIVIDUAL = "new_individual"
