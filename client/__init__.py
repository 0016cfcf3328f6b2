"""The client library, answer comparison, filter, eval and CLI."""
