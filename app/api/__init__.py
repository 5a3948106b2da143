"""HTTP API routes (`/api/...`, `/healthz`, `/readyz`, `/metrics`) on the same server as the chat."""

from fastapi import APIRouter

api_router = APIRouter()
