"""Asynchronous jobs: /v1/images/jobs (create, poll, events, cancel) and /v1/videos.

A job answers 202 at once and runs on the engine while the client polls or listens; `store` is
the bounded, expiring registry both kinds share, `image_job` an image job's record and outcome,
`images` its routes, `videos` the video jobs and their routes.
"""
