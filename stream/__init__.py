"""sla-stream: measures room-entry success against the TRTC SLA, slot by slot."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sla-stream")
    """The installed package's version: pyproject.toml is its one source."""
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "unknown"
