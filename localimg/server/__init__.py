"""The OpenAI-compatible HTTP server of `localimg serve`: app, routes, schemas, security."""
