"""The chat: conversation logic and Chainlit integration for `chainlit_app.py` (see app/chat/flow.py)."""
