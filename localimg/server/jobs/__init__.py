"""Asynchronous jobs: /v1/images/jobs (create, poll, events, cancel) and /v1/videos.

A job answers 202 at once and runs on the engine while the client polls or listens. `base` is
the record both kinds derive from (engine job, error path, cancel), `routes` the one factory of
their five routes, `store` the bounded, expiring registry they share; `image_job` and `images`
are the image kind, `videos` the video kind.
"""
