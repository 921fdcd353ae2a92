"""What the bot does with a message: compiled tenants (catalog), one turn (route -> actions -> flow),
and the routing, flows and tools packages."""
