"""The project's own API under `/api/v1`: analyze, classify, jobs, the catalogue."""
