"""A small-group chat server on Twisted; see docs/protocol.md."""

from chatproto.codec import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION", "__version__"]
#: The one place the version is written (setup.cfg reads it from here).
__version__ = "0.2.0"
