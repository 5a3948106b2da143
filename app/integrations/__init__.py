"""Batch front-ends that speak another system's protocol without the HTTP server (TaskBridge)."""
