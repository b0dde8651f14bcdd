# What every start of the workflow does before any job (main process only, also in a dry-run): stale locks,
# the gallery version's log and the start lines, then the per-dataset tables brought up to date.
import os

from workflow.enrollment import record_data, recover_log

# Per-dataset tables (metadata rows + the sha1 of each image): the only view of the data that jobs have.
TABLES_DIR = Path("results/data")


def _enrollment_only():
    """Whether the command line names targets enroll, enroll_undo or enroll_redo and no other rule or file (a
    heuristic on the arguments: Snakemake sets its targets after the Snakefile is read). They check the data
    themselves (workflow/enrollment.py) and read no table, so a gallery version that the tables refuse can always
    be undone.
    """
    words = {w for w in sys.argv[1:] if not w.startswith("-") and "=" not in w}
    outputs = {w for w in words if w == "all" or w.startswith("results/")}
    return bool({"enroll", "enroll_undo", "enroll_redo"} & words) and not outputs


def _start_run():
    """What a start of the workflow does before any job (main process only, also in a dry-run).

    Removes the directory lock of a Snakemake that died (workflow/runlock.py), then validates the data and
    brings the existing tables up to date, rewriting a table only when its content changes (a replaced or
    truncated image changes its sha1). Bad data stops here: no job starts, nothing is deleted.
    Returns the datasets whose tables rule validate_data builds (one job for all of them, so that no job opens
    an image before every dataset passed): those without a table, or every dataset of the demo (generated data).
    """
    if not workflow.is_main_process:
        return list(DATASETS)
    from workflow.data import DataValidationError
    from workflow.runlock import release_stale_locks
    from workflow.tables import sync_tables

    removed = release_stale_locks()
    # a gallery switch whose log line a killed enroll/undo/redo did not write (workflow/enrollment.py)
    recover_log(ENROLLMENT_DIR)
    record_data(
        ENROLLMENT_DIR, DATA_ROOT
    )  # the data's identity, so that a moved copy finds its versions
    if not _FOUND_BY.startswith("its real path"):
        logger.warning(
            f"Gallery versions of {DATA_ROOT} found in {ENROLLMENT_DIR} by {_FOUND_BY}"
        )
    logger.info(GALLERY_LINE)
    if DEMO_OVERLAY:
        logger.info(
            "Demo data: config/demo.yaml is applied on top of config/config.yaml (its keys win there; "
            "--config and --configfile still win over both)"
        )
    if removed:
        logger.warning(
            f"Removed the directory lock left by a Snakemake run that is no longer alive ({len(removed)} "
            "lock file(s) in .snakemake/locks); resuming."
        )
    if not (DATA_ROOT / "metadata.csv").is_file():  # the demo, before it is generated
        return list(DATASETS)
    if _enrollment_only():
        return []
    present = [d for d in DATASETS if (TABLES_DIR / f"{d}.tsv").is_file()]
    # With a gallery version active (workflow/enrollment.py) every table is written here, through it; rule
    # validate_data (which reads metadata.csv alone) then only rebuilds tables after the demo is regenerated.
    try:
        changed = sync_tables(
            DATA_ROOT,
            TABLES_DIR,
            DATASETS if ENROLLMENT else present,
            config["data"]["extra_required_columns"],
            threads=min(8, os.cpu_count() or 1),
            allow_external_symlinks=config["data"]["allow_external_symlinks"],
            enrollment=ENROLLMENT,
            discovery=DISCOVERY,
            warn=lambda line: logger.warning(f"Warning: {line}"),
        )
    except DataValidationError as err:
        raise WorkflowError(
            f"{err}\nFix these and start again: no job was started and nothing was deleted."
        ) from None
    if changed:
        logger.info(
            f"Data changed: rewrote {', '.join(f'{TABLES_DIR}/{d}.tsv' for d in changed)}"
        )
    if IS_DEMO:
        return list(DATASETS)
    return [d for d in DATASETS if not (TABLES_DIR / f"{d}.tsv").is_file()]


TABLES_TO_BUILD = _start_run()
