"""Asynchronous jobs: persistent records, a huey queue (SQLite embedded or Redis), workers.

`store` keeps job records and their input images, `queue` submits and enqueues, `runner` works a
job, `worker` runs the embedded or standalone consumer, `taskbridge` and `folder` are the two
batch front-ends that need no HTTP server.
"""
