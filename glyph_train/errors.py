"""The one exception type users see: its message is a single line naming the file or row and what to do."""


class GlyphTrainError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""
