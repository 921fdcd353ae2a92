"""Operator-side configuration and commands: tenant files, definition sections, CLI tasks."""
