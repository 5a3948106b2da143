"""Model backends and the manager that loads them. Heavy imports (torch, transformers) live here only."""
