"""The receiver: webhooks verified, parsed and published with broker confirms before the 200."""
