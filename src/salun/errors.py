"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class SalunError(Exception):
    """A user-facing error: bad input, missing data, a file that does not fit.

    The message must name the bad value and say what to do about it.
    """


class DatasetNotFoundError(SalunError):
    """A dataset's files were not found in any of the searched places."""


class ArtifactError(SalunError):
    """A model, mask or split file is missing, corrupted or does not match."""
