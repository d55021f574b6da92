"""The one exception type the CLI turns into a clear message and a non-zero exit."""


class OverlayError(Exception):
    """A user-facing failure: the message names the artifact, patch, file or hash at fault."""
