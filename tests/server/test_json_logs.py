"""--log-format json: one JSON access line per request, with its id, route, model and seconds."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import httpx

from localimg._util.logs import JsonFormatter
from localimg.engine import Engine, EngineSettings
from localimg.server.app import ServerSettings, create_app
from tests.support.server_support import serve_in_thread, write_model


def test_json_access_lines(tmp_path: Path, tiny_sd: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    write_model(models, "tiny", tiny_sd)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("localimg.access")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        engine = Engine(EngineSettings(models_path=models))
        settings = ServerSettings(log_format="json", output_dir=tmp_path / "out")
        with serve_in_thread(create_app(settings, engine)) as url:
            ok = httpx.post(
                f"{url}/v1/images/generations",
                json={"prompt": "otter", "size": "64x64", "steps": 2},
                timeout=300,
            )
            assert ok.status_code == 200, ok.text
            missing = httpx.get(f"{url}/nope")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    by_id = {line["request_id"]: line for line in lines}
    gen = by_id[ok.headers["x-request-id"]]
    assert gen["route"] == "/v1/images/generations" and gen["method"] == "POST"
    assert gen["model"] == "tiny" and gen["status"] == 200 and gen["client"] == "127.0.0.1"
    assert gen["queue_seconds"] >= 0 and gen["generation_seconds"] > 0
    assert gen["duration_seconds"] >= gen["generation_seconds"]
    assert gen["level"] == "info" and gen["logger"] == "localimg.access"
    other = by_id[missing.headers["x-request-id"]]
    assert other["route"] == "unmatched" and other["status"] == 404 and other["model"] is None
