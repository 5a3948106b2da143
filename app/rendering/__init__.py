"""Pictures from results: annotators configured once (`annotate(image, result)`) and classification charts."""
