"""The ASGI app, the uvicorn settings that harden it, and the checks run before it starts."""
