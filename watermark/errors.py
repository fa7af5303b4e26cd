"""Exception types of leaktrace's I/O edge (media, registry, studio).

The pure core raises ``ValueError`` / ``TypeError`` for bad arguments; the layers that
touch files and the database raise these, and the CLI turns any :class:`LeaktraceError`
into a one-line ``error: ...`` message with exit code 1.
"""

from __future__ import annotations

__all__ = ["DamagedImageError", "LeaktraceError", "MediaError", "RegistryError", "StudioError"]


class LeaktraceError(Exception):
    """Base class of every error leaktrace reports to a user as one line."""


class MediaError(LeaktraceError):
    """An image file is missing, unreadable, corrupt, too small, too large or unwritable."""


class DamagedImageError(MediaError):
    """A JPEG whose image data is cut short or corrupt, refused; ``read_image(path,
    damaged=True)`` returns the part its decoder recovers."""


class RegistryError(LeaktraceError):
    """The delivery registry refused an operation or is unusable."""


class StudioError(LeaktraceError):
    """A studio (secret + registry) is missing, already exists, or refused a batch."""
