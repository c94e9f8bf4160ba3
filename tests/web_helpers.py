"""A processor and the web view on the session broker, and workflows driven through the
public client, for the web tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from duroot_stream.client import DuRootClient
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import PathUsage
from duroot_stream.web import WebServer
from tests.processor_harness import running_processor, setup_topics

REGISTRY = str(uuid.uuid4())


@dataclass(frozen=True)
class Pipeline:
    client: DuRootClient
    url: str  # of the web view, no trailing slash

    def begin(self, root: str, host: str = "host-a", lines: list[PathUsage] | None = None) -> str:
        """A new workflow of `root`, with `lines` appended; its id."""
        wf = self.client.begin(REGISTRY, root, host, f"/data{root}").workflow_id
        if lines:
            self.client.append_many(wf, lines)
        return wf


@contextmanager
def pipeline(kafka: KafkaConfig) -> Iterator[Pipeline]:
    setup_topics(kafka)
    with running_processor(kafka), DuRootClient(kafka) as client, WebServer(kafka) as web:
        yield Pipeline(client, web.url)


def get(url: str, timeout: float = 30) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of a GET, also for error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def get_json(url: str) -> tuple[int, object]:
    status, _, body = get(url)
    return status, json.loads(body)
