"""The source database's URL, checked before it is used: a URL no retry can make work (not a
URL, a dialect SQLAlchemy does not know, a SQLite file that is not there) fails at once with
one line naming the problem, instead of a driver's traceback after the retries. Passwords
never appear in a message. No Dagster import: ``days.py`` uses it before Dagster loads."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

EXAMPLES = "postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB, mysql+pymysql://USER@HOST/DB or sqlite:///PATH"
# user:password@ anywhere in a URL SQLAlchemy could not parse (a mistyped scheme too)
_CREDENTIALS = re.compile(r"([^\s:/@]*):[^\s@]*@")


class SourceUrlError(ValueError):
    """A source URL that cannot work as written; the message says why."""


def redact(url: str) -> str:
    """``url`` with its password as ``***``, parseable or not."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        return _CREDENTIALS.sub(r"\1:***@", url)


def demo_source_url() -> str:
    """The generated demo database's URL, the file made on first use."""
    from .settings import demo_source_path

    path = demo_source_path()
    if path.exists():
        return f"sqlite:///{path}"
    from .demo_data import ensure_sqlite  # numpy and pyarrow: only to generate it

    return ensure_sqlite(path)


def source_engine(url: str, creating: bool = False) -> sa.Engine:
    """An engine for ``url``; ``SourceUrlError`` when the URL itself is the problem (its
    message leaves the URL to the caller, who names it redacted). ``creating``: the
    database is to be written (a SQLite file may be new, its folder must exist)."""
    try:
        parsed = sa.engine.make_url(url)
        parsed.port  # noqa: B018 - a port that is not a number fails here, not in the driver
    except (sa.exc.ArgumentError, ValueError) as e:
        raise SourceUrlError(f"not a database URL (expected {EXAMPLES})") from e
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        # SQLite would create an empty file and report its tables missing, or fail with
        # "unable to open database file" in a folder that is not there
        if path and path != ":memory:" and not path.startswith("file:"):
            file = Path(path).resolve()
            if creating and not file.parent.is_dir():
                raise SourceUrlError(f"the folder {file.parent} does not exist")
            if not creating and not file.is_file():
                raise SourceUrlError(f"the file {file} does not exist")
    try:
        return sa.create_engine(parsed)
    except sa.exc.NoSuchModuleError as e:
        raise SourceUrlError(
            f"SQLAlchemy has no dialect {parsed.drivername!r} (expected {EXAMPLES})"
        ) from e
    except ImportError as e:
        raise SourceUrlError(f"the driver for {parsed.drivername!r} is not installed ({e})") from e


def error_line(e: BaseException) -> str:
    """A database error in one line: the driver's own message (``orig``), without
    SQLAlchemy's statement and background-link lines."""
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__
