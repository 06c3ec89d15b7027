"""Every error a user can cause, under one base class.

`FusionError` is the base of the errors that mean "what you gave is wrong" or "what you asked
for cannot be done here": a bad config key, a missing file, a corrupt checkpoint, a device that
will not open, a cluster that cannot place the run. Each message names the key, path or value.
The `fusion` command prints these as one line (`fusion: error: ...`, exit status 2); anything
else is a bug and keeps its traceback.

Each class also derives from the builtin a caller would have caught before (`ValueError`,
`RuntimeError`, `FileNotFoundError`), so code that catches the builtin keeps working, and a
pydantic validator may raise `InputError` (it is a `ValueError`).
"""

from __future__ import annotations


class FusionError(Exception):
    """Base of every user-facing error; the message alone tells the user what to fix."""


class InputError(FusionError, ValueError):
    """A value, frame, file's content or argument that cannot be used; the message names it."""


class ConfigError(InputError):
    """A configuration file or mapping that cannot be used; the message names key and file."""


class MissingFileError(FusionError, FileNotFoundError):
    """A file or folder the user named does not exist; the message names the path."""


class OutputExistsError(FusionError, FileExistsError):
    """An output path already exists and would be overwritten; the message names it."""


class CheckpointError(InputError):
    """A checkpoint that cannot be loaded; the message names the file and the reason."""


class LabelError(InputError):
    """A labels file with a bad row; the message names the file, the row and the field."""


class BagError(InputError):
    """A ROS bag or MCAP file that cannot be read; the message names the file and why."""


class StartError(FusionError, RuntimeError):
    """A command could not start (port taken, a device that will not open, the cluster cannot
    place the run); the message says why."""


class SourceError(StartError):
    """A source cannot be opened, or its device is gone (the message names which)."""


class RunEnded(FusionError, RuntimeError):
    """A run that had started could not go on (a node lost with a rig nothing else can run, a
    sensor past its restart limit); the message names what was lost."""
