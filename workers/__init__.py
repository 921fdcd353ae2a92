"""Process entry points: one thin main per process kind, all behind the `engine` CLI."""
