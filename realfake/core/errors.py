"""The project's error type: expected failures shown to the user as one line."""

import errno

# What a write raises when there is no room: a full disk, a used-up quota, a file size limit.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class PipelineError(Exception):
    """A problem with the user's input or data, reported as `error: <message>` with no traceback."""
