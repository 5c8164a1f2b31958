"""A small-group chat server on Twisted; see docs/protocol.md."""

from chatproto.codec import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION", "__version__"]
__version__ = "0.1.0"
