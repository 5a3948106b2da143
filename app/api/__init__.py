"""HTTP API routes (`/api/...`, `/healthz`, `/readyz`, `/metrics`) on the same server as the chat.

The server includes `api_router` and calls `install_api(app, settings)`; see docs/API.md.
"""

from fastapi import APIRouter

from app.api.fallback import build_fallback
from app.api.install import install_api
from app.api.seed.classify import router as seed_classify_router
from app.api.seed.vitrivr import listings as seed_listings_router
from app.api.seed.vitrivr import router as seed_jobs_router
from app.api.v1.analyze import router as analyze_router
from app.api.v1.classify import router as classify_router
from app.api.v1.jobs import router as jobs_router
from app.api.v1.meta import api_v1, ops

api_router = APIRouter()
api_router.include_router(analyze_router)
api_router.include_router(api_v1)
api_router.include_router(ops)
api_router.include_router(jobs_router)
api_router.include_router(seed_jobs_router)
api_router.include_router(seed_listings_router)
api_router.include_router(classify_router)
api_router.include_router(seed_classify_router)
# last: JSON 404/405 for anything else under /api
api_router.include_router(
    build_fallback(
        analyze_router,
        api_v1,
        ops,
        jobs_router,
        seed_jobs_router,
        seed_listings_router,
        classify_router,
        seed_classify_router,
    )
)

__all__ = ["api_router", "install_api"]
