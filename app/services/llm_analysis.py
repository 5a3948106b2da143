"""Optional LLM analysis of a classification: one short paragraph from an OpenAI-compatible chat API.

`ANALYSIS_API_URL` is the API's base URL (`POST {url}/chat/completions`, as served by OpenAI, vLLM,
Ollama, llama.cpp, LiteLLM, ...). The route alias (`llama`, `gemma`) picks the model name from
`ANALYSIS_MODEL_LLAMA` / `ANALYSIS_MODEL_GEMMA`. Failures become `AnalysisFailed` so the caller can
still return the classification.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from app.core.config import Settings
from app.core.errors import AppError

log = logging.getLogger(__name__)

ALIASES = ("llama", "gemma")
MAX_ANSWER_CHARS = 4000
SYSTEM_PROMPT = (
    "You interpret the output of an image classifier for a non-expert. In one short paragraph "
    "(at most 80 words), say what the image most likely shows, how confident the classifier is, and "
    "whether the top labels agree or point to different things. Do not invent details beyond the labels."
)


class AnalysisFailed(AppError):
    code = "analysis_failed"
    http_status = 502


def chat_completions_url(base_url: str) -> str:
    """`http://host/v1` → `http://host/v1/chat/completions` (a full endpoint URL is kept as it is)."""
    trimmed = base_url.strip().rstrip("/")
    return trimmed if trimmed.endswith("/chat/completions") else f"{trimmed}/chat/completions"


def describe_scores(scores: Sequence[tuple[str, float]]) -> str:
    return "\n".join(f"- {label}: {probability:.1%}" for label, probability in scores)


class LLMAnalyst:
    def __init__(
        self,
        api_url: str,
        models: Mapping[str, str],
        api_key: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = chat_completions_url(api_url)
        self.models = {alias: name for alias, name in models.items() if name}
        self._api_key = api_key
        self._timeout = httpx.Timeout(timeout_s)
        self._transport = transport

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMAnalyst | None:
        """None when ANALYSIS_API_URL is empty: the feature is off and responses have no `analysis`."""
        if not settings.analysis_api_url.strip():
            return None
        key = settings.analysis_api_key.get_secret_value() if settings.analysis_api_key else None
        return cls(
            settings.analysis_api_url,
            {"llama": settings.analysis_model_llama, "gemma": settings.analysis_model_gemma},
            api_key=key or None,
            timeout_s=settings.analysis_timeout_s,
        )

    def model_for(self, alias: str) -> str | None:
        return self.models.get(alias.strip().lower())

    async def analyze(self, alias: str, scores: Sequence[tuple[str, float]]) -> str:
        """The model's paragraph about `scores` (label, probability), or `AnalysisFailed`."""
        model = self.model_for(alias)
        if model is None:
            raise AnalysisFailed(f"No analysis model is configured for {alias[:20]!r}.", code="analysis_unavailable")
        payload = {
            "model": model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": "Classifier output (label: probability):\n" + describe_scores(scores)},
            ],
            "temperature": 0.2,
            "max_tokens": 200,
            "stream": False,
        }
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport, follow_redirects=False
            ) as client:
                response = await client.post(self.url, json=payload, headers=headers)
        except httpx.TimeoutException:
            raise AnalysisFailed("The analysis service did not answer in time.", code="analysis_timeout") from None
        except httpx.HTTPError as exc:
            log.warning("analysis request to %s failed: %s", self.url, exc)
            raise AnalysisFailed(f"The analysis service cannot be reached ({type(exc).__name__}).") from None
        if response.status_code != 200:
            log.warning("analysis service answered %s: %s", response.status_code, response.text[:300])
            raise AnalysisFailed(f"The analysis service answered HTTP {response.status_code}.")
        return _answer_text(response)


def _answer_text(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
        content = body["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise AnalysisFailed("The analysis service sent an answer in an unexpected format.") from None
    if not isinstance(content, str) or not content.strip():
        raise AnalysisFailed("The analysis service sent an empty answer.")
    return content.strip()[:MAX_ANSWER_CHARS]
