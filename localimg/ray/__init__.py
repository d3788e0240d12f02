"""`serve --ray`: one Ray Serve deployment per model behind the same HTTP app as `serve`.

A part of its own, above `server`, so that only `localimg serve --ray` imports it (Ray takes
seconds to import): `cluster` starts or joins Ray and plans each model's deployment, `replica`
is the deployment (an in-process slot in a Ray actor), `slot` is the engine's slot that sends
jobs to it, and `app` wraps `create_app` over an engine of those slots.
"""
