"""`python -m tests.scripted_server serve ...`: the app's own CLI with scripted Florence-2 answers.

For browser tests that need answers with boxes: the random tiny model, decoding greedily without an
n-gram ban, tends to repeat one token. `SCRIPTED_ANSWERS` holds `{prompt substring: [sure, unsure]}`
(first match wins; the key "" matches every prompt); everything but the logits is the app's real path.
"""

from __future__ import annotations

import json
import os
import sys

from app.cli.main import main
from tests.scripted_support import scripted_generate


def run() -> None:
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    answers = {key: (sure, unsure) for key, (sure, unsure) in json.loads(os.environ["SCRIPTED_ANSWERS"]).items()}
    tokenizer = AutoProcessor.from_pretrained(os.environ["MODEL_ID"]).tokenizer
    original = Florence2ForConditionalGeneration.generate
    Florence2ForConditionalGeneration.generate = scripted_generate(  # type: ignore[method-assign]
        original, tokenizer, answers, prompts=[]
    )
    main(sys.argv[1:])


if __name__ == "__main__":
    run()
