"""Routes that answer the clients of the systems this app replaces (the seeds), value for value."""
