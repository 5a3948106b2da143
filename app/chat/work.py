"""Steps every chat task shares: load a backend behind a progress message, decode the session's images,
and title the finished step. Used by `app.chat.flow` for every task."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from app.chat import replies
from app.chat.inputs import load_upload
from app.chat.session import ChatSession
from app.chat.ui import ChatUI, StepHandle
from app.core.config import Settings
from app.core.images import ImageLimits, LoadedImage
from app.models.manager import ModelManager, ModelState

LOAD_TICK_S = 1.0


async def ensure_backend(ui: ChatUI, manager: ModelManager, backend: str) -> None:
    """Load on first use behind a ticking progress message; a failure carries the engine's fix-it text."""
    slot = manager.slot(backend)  # an unconfigured backend is a clear `ModelUnavailable`
    if slot.state is ModelState.READY:
        return
    model_id = replies.model_in_words(str(slot.status().get("model_id") or backend))
    started = time.perf_counter()
    loading_text = f"Loading **{replies.escape_md(model_id)}** (first request only)…"
    async with ui.progress(loading_text, failed=f"Loading **{replies.escape_md(model_id)}** failed.") as progress:
        loading = asyncio.ensure_future(asyncio.to_thread(manager.get, backend))
        while not loading.done():
            await asyncio.wait({loading}, timeout=LOAD_TICK_S)
            if not loading.done():
                await progress.show(f"{loading_text} {time.perf_counter() - started:.0f} s")
        await loading
        info = slot.status()
        seconds = replies.fmt_seconds(time.perf_counter() - started)
        where = f" on {info['device']} ({info['dtype']})" if info.get("device") and info.get("dtype") else ""
        await progress.show(f"**{replies.escape_md(model_id)}** loaded in {seconds}{where}.")


async def decode_images(
    session: ChatSession, indices: Sequence[int], fresh: Sequence[LoadedImage] | None, settings: Settings
) -> dict[int, LoadedImage]:
    """Decoded images: the ones just validated, or decoded again from the files Chainlit keeps."""
    if fresh is not None:
        return {i: fresh[i] for i in indices}
    limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    decoded = await asyncio.to_thread(lambda: [load_upload(session.images[i].upload, limits) for i in indices])
    return dict(zip(indices, decoded, strict=True))


def finish_step(step: StepHandle, name: str, count: int, seconds: float, failed: bool = False) -> None:
    """One line per run: "Object detection in 0.42 s", or "Object detection failed" when no image got a result."""
    took = replies.fmt_seconds(seconds)
    images = f"{count} image{'s' if count != 1 else ''}"
    if failed:
        step.fail(f"{name} failed", f"No result for {images}; the reply says why.")
    else:
        step.finish(f"{name} in {took}", f"{images} in {took}")
