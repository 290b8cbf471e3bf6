"""One log format for every command (the device's relayed lines included), with the libraries' logs in it."""
import logging
import os
import sys

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's: what run.py's users see first
# Loggers whose INFO lines say nothing about the sweep (MLflow's table creation, alembic's migrations,
# matplotlib's first-run font cache): their warnings still come, in the same format.
LIBRARIES = ("mlflow", "alembic", "sqlalchemy.engine", "huey", "matplotlib")


def configure_logging(level: int = logging.INFO, log_file=None) -> None:
    """The root logger to stderr (and ``log_file``) in ``LOG_FORMAT``; the libraries' loggers into it."""
    formatter = logging.Formatter(LOG_FORMAT)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handlers = [logging.StreamHandler(sys.stderr)] + ([logging.FileHandler(str(log_file))] if log_file else [])
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)
    adopt_library_loggers()


def adopt_library_loggers() -> None:
    """The libraries' loggers into the root logger's handlers (Hydra's, or ``configure_logging``'s), warnings only."""
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # MLflow would install a format of its own on import
    for name in LIBRARIES:  # MLflow may have been imported already and given its loggers handlers of their own
        library = logging.getLogger(name)
        library.handlers, library.propagate = [], True
        library.setLevel(logging.WARNING)
