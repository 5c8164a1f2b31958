"""The PyQt6 desktop client for chatproto servers."""
