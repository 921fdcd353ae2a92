"""Async, event-driven conversation engine."""
