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


class ModelError(OrgansegError):
    """A model cannot be built or loaded (unknown member, missing weights, bad checkpoint)."""


class DataWarning(UserWarning):
    """Recoverable data problem (skipped non-DICOM file, odd grey level); the message names the file."""
