"""What a failed job's `error` shows through the API: the reason without the server's internals.

The worker logs the full exception (traceback, paths, SQL); the job row keeps a message a data owner
can read and act on. Database and file-system failures say only what kind of failure it was (their
text is SQL and server paths); any other message keeps its words with absolute paths cut to their
last component, and anything after an embedded `[SQL:` dropped."""

from __future__ import annotations

import re

from sqlalchemy.exc import SQLAlchemyError

MAX_ERROR_CHARS = 4000  # the length the queue stores

# an absolute POSIX path of at least two components, not part of a URL (`https://...`) or of another
# path, and not an API path (`/v1/...`, which tells the caller what to call)
_PATH = re.compile(r"(?<![\w:/.~-])/(?!v1/)(?:[^\s/'\"(),;:\[\]]+/)+([^\s/'\"(),;:\[\]]*)")
_SQL = re.compile(r"\[SQL: .*", re.DOTALL)


def _without_paths(text: str) -> str:
    return _PATH.sub(lambda m: m.group(1) or "(a server folder)", text)


def public_error(exc: BaseException, job_id: str) -> str:
    """The `error` recorded for a job that raised `exc`; the log holds the details under `job_id`."""
    kind = type(exc).__name__
    see_log = f"the model owner's server log has the details (job {job_id})"
    if isinstance(exc, SQLAlchemyError):
        return f"{kind}: the database failed while the job ran; {see_log}"
    if isinstance(exc, OSError):
        return f"{kind}: a file or network operation failed while the job ran; {see_log}"
    text = _without_paths(_SQL.sub("", str(exc))).replace("\n", " ").strip()
    return f"{kind}: {text}"[:MAX_ERROR_CHARS] if text else f"{kind}; {see_log}"
