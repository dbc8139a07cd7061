"""The project's error type: expected failures shown to the user as one line."""


class PipelineError(Exception):
    """A problem with the user's input or data, reported as `error: <message>` with no traceback."""
