"""Florence-2 vision analysis app: chat, HTTP API and CLI over one engine."""

__version__ = "0.1.0"
REPOSITORY = "https://github.com/florence-vision/florence-vision-app"
