"""Servers we measure ourselves against, written the obvious way."""
