"""A SQL database given as the tracking URI (postgresql://, mysql://, mssql://), tried once before MLflow opens it.

MLflow retries a connection that fails ten times with growing pauses (about 100 s) before it raises; a database
that does not exist or refuses the login is a mistake in the settings, said in one line at once.
"""
from __future__ import annotations

import urllib.parse

SQL_SCHEMES = ("postgresql", "mysql", "mssql")


def check_database(uri: str, redacted: str) -> str | None:
    """Why the database at ``uri`` cannot be used (one line, without the password), or None when it can."""
    if urllib.parse.urlsplit(uri).scheme.split("+")[0] not in SQL_SCHEMES:
        return None
    import sqlalchemy
    from mlflow.store.db.utils import create_sqlalchemy_engine

    try:
        engine = create_sqlalchemy_engine(uri)  # MLflow's own engine, so the same driver and options
    except ModuleNotFoundError as exc:
        return f"tracking URI {redacted}: no driver for it ({exc}): pip install -e \".[server]\""
    try:
        sqlalchemy.inspect(engine)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", exc)).strip().splitlines()
        return f"tracking URI {redacted} cannot be used: {cause[0] if cause else type(exc).__name__}"
    finally:
        engine.dispose()
    return None
