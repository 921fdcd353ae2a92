"""Platform traffic for demos and load tests: signed webhooks as each platform sends them."""
