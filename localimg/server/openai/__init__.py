"""OpenAI's images API: /v1/images/generations, edits and variations (with streaming), /v1/models.

`images` has the routes, `schemas` the request bodies and their mapping to `ImageRequest`,
`forms` the multipart uploads of edits and variations, `streaming` the Server-Sent Events of
`stream: true`, `models` the model list. The image jobs (jobs/) and A1111 (a1111/) reuse the
request parsing and job waiting defined here.
"""
