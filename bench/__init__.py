"""Benchmarks: run from the repository root as `python -m bench.<script> --help`."""

import os

# Set before any bench module imports transformers: benchmarks build their checkpoints locally and must never
# wait on the hub (importing huggingface_hub reads these once).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
