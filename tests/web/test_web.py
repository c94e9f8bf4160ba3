"""The web view over HTTP, on the real broker and processor: JSON, the du download,
errors, and what it says when Kafka is unreachable."""

from __future__ import annotations

import uuid

import pytest

from duroot_stream.client import WorkflowNotFound
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import PathUsage
from duroot_stream.local.broker import free_port
from duroot_stream.web import WebServer
from tests.web_helpers import REGISTRY, get, get_json, pipeline

pytestmark = pytest.mark.broker

LINES = [PathUsage("a", 4096), PathUsage("b c", 8192), PathUsage(".", 16384)]


def test_json_and_du_download_of_a_finished_workflow(kafka: KafkaConfig) -> None:
    with pipeline(kafka) as p:
        wf = p.begin("/g/one", lines=LINES)
        p.client.commit(wf)
        status, body = get_json(f"{p.url}/workflows/{wf}.json")
        assert status == 200
        assert body == {
            "workflow_id": wf,
            "state": "TERMINATED",
            "vid": body["vid"],  # type: ignore[index]
            "complete": True,
            "status_code": 0,
            "status_message": "",
            "host": "host-a",
            "global_root": "/g/one",
            "host_root": "/data/g/one",
            "registry_id": REGISTRY,
            "started_at_ms": body["started_at_ms"],  # type: ignore[index]
            "completed_at_ms": body["completed_at_ms"],  # type: ignore[index]
            "lines": [
                {"path": "a", "usage": 4096},
                {"path": "b c", "usage": 8192},
                {"path": ".", "usage": 16384},
            ],
        }
        code, headers, text = get(f"{p.url}/workflows/{wf.upper()}.du")
        assert code == 200
        assert text == "4096 a\n8192 b c\n16384 .\n"  # as `duroot-stream get` prints it
        assert headers["content-disposition"] == f'attachment; filename="du-{wf}.txt"'


def test_unknown_and_malformed_workflow_ids(kafka: KafkaConfig) -> None:
    with pipeline(kafka) as p:
        missing = str(uuid.uuid4())
        code, _, page = get(f"{p.url}/workflows/{missing}")
        assert code == 404 and "No such workflow" in page and missing in page
        assert get_json(f"{p.url}/workflows/{missing}.json") == (
            404,
            {"error": "No such workflow", "message": str(WorkflowNotFound(missing))},
        )
        code, _, page = get(f"{p.url}/workflows/not-a-uuid")
        assert code == 400 and "is not a UUID" in page
        assert get(f"{p.url}/workflows/not-a-uuid/events")[0] == 400


def test_root_and_compare_pages_say_what_is_missing(kafka: KafkaConfig) -> None:
    with pipeline(kafka) as p:
        wf = p.begin("/g/two", lines=LINES)
        p.client.commit(wf)
        code, _, page = get(f"{p.url}/root")
        assert code == 400 and "/root?root=" in page
        code, _, page = get(f"{p.url}/root?root=/g/none")
        assert code == 200 and "0 runs" in page and "Two runs are needed" in page
        code, _, page = get(f"{p.url}/root?root=/g/two")
        assert code == 200 and f'data-workflow="{wf}"' in page
        code, _, page = get(f"{p.url}/compare?a={wf}")
        assert code == 400 and "Give two workflows" in page
        code, _, page = get(f"{p.url}/compare?a={wf}&b=not-a-uuid")
        assert code == 400 and "is not a UUID" in page
        missing = str(uuid.uuid4())
        code, _, page = get(f"{p.url}/compare?a={wf}&b={missing}")
        assert code == 404 and missing in page
        # A run compared with itself: every path unchanged.
        code, _, page = get(f"{p.url}/compare?a={wf}&b={wf}")
        assert code == 200 and page.count(">0%<") == len(LINES)


def test_says_clearly_when_kafka_is_unreachable(topic_prefix: str) -> None:
    dead = KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_port()}", topic_prefix=topic_prefix)
    with WebServer(dead) as web:
        code, _, page = get(f"{web.url}/", timeout=60)
    assert code == 503
    assert "Kafka is unreachable" in page
    assert dead.bootstrap_servers in page
