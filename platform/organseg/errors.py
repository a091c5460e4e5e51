"""User-facing errors and warnings.

Anything a user can cause (a bad file, a bad config key, a missing weights cache) raises a subclass of
:class:`OrgansegError` whose message names the file or field. The CLI prints those messages without a
traceback; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class OrgansegError(Exception):
    """An error caused by the user's input or environment, with a message meant for people."""


class DataError(OrgansegError):
    """Unreadable, inconsistent or unexpected image/mask data. The message names the file."""


class ConfigError(OrgansegError):
    """An invalid configuration file or value. The message names the key."""


class RunError(OrgansegError):
    """A training, tuning or quickstart run that failed (every trial failed, a member did not finish).

    The configuration was valid; the message says what failed and where its logs are.
    """


class ClusterError(OrgansegError):
    """The Ray cluster named by ``--address`` / ``RAY_ADDRESS`` could not be joined; the message names
    the address and what the cluster answered."""


class FieldErrors(ValueError):
    """Problems a cross-field check of a config model found, each at its own key.

    Raised inside a pydantic validator, so pydantic reports it with the model's location; the config
    loader adds each ``key`` (relative to that model) to the location, so every message names its dotted
    key and all of them are reported at once.
    """

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        self.problems = problems
        super().__init__(
            "; ".join(f"{'.'.join(str(k) for k in key)}: {message}" for key, message in problems)
        )

    @classmethod
    def check(cls, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        """Raise when ``problems`` holds any."""
        if problems:
            raise cls(problems)


class ModelError(OrgansegError):
    """A model cannot be built or loaded (unknown member, missing weights, bad checkpoint)."""


class DataWarning(UserWarning):
    """Recoverable data problem (skipped non-DICOM file, odd grey level); the message names the file."""


class RequestTooLarge(DataError):
    """Input whose size (bytes, voxels, files) exceeds a configured limit; found before decoding it."""
