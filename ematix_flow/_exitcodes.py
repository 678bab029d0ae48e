"""Exit codes of the ``flow`` CLI, one meaning each, so scripts and Kubernetes can rely
on them.

Every command exits through these names (never a bare integer). The Kubernetes side
reads them too: a Job whose pod exits with :data:`CONFIG_ERROR` failed because of its
configuration (a missing Secret, an unknown connection name) and retrying will not help,
while :data:`RUN_FAILED` is a run that may succeed on the next schedule.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CONFIG_ERROR", "INTERRUPTED", "OK", "RUN_FAILED", "USAGE", "ExitCode"]


class ExitCode(IntEnum):
    """The process exit status of a ``flow`` command."""

    #: Everything asked for was done (every connection reachable, every target synced).
    OK = 0
    #: The command ran but failed: a run or one of its targets failed, a connection
    #: could not be reached (``flow connections check``), a database error occurred.
    RUN_FAILED = 1
    #: The command line itself is wrong: unknown command or option, missing or malformed
    #: argument (click uses 2 for its usage errors, so we keep it).
    USAGE = 2
    #: The configuration is wrong: unknown connection name, malformed config file,
    #: unset ${VAR}, invalid DSN, a pipeline name the module does not register. Fix the
    #: configuration; retrying will not help.
    CONFIG_ERROR = 3
    #: Stopped by Ctrl-C (SIGINT), as shells report it (128 + 2): the target being
    #: written was rolled back (recorded ``interrupted``); targets before it committed.
    INTERRUPTED = 130


OK = ExitCode.OK
RUN_FAILED = ExitCode.RUN_FAILED
USAGE = ExitCode.USAGE
CONFIG_ERROR = ExitCode.CONFIG_ERROR
INTERRUPTED = ExitCode.INTERRUPTED
