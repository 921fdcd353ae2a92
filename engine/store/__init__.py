"""Raw asyncpg SQL, one module per concern; callers own the transaction."""
