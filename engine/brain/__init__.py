"""What the bot does with a message: compiled tenants (catalog), one turn (route -> actions -> flow), routing, flows, tools."""
