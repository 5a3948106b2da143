"""Use-case layer shared by the CLI, chat and HTTP API."""
