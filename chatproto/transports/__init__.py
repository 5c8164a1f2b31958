"""Adapters between a wire format and the core: each parses its packets into
calls on :class:`~chatproto.core.hub.Hub` and writes what the core sends."""
