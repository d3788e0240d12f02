"""LocalAI's model-management routes under /models/: the gallery (available, apply, jobs) and
load/unload of a served model, in LocalAI's shapes so its clients can drive localimg."""
