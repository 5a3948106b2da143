"""The domain: the task registry, result types, geometry, images, errors and settings. Imports nothing above it."""
