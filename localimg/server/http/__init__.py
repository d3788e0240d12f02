"""What stands between the network and the routes: API keys, CORS, the body limit, the access
log, and the Server-Sent Events framing the streaming routes share.

The checks are plain ASGI middleware (asgi.py) so that they run before any body is read and
answer in OpenAI's error shape.
"""
