"""`run --serve`: after the du the pipeline and the web view stay up, the URL of the
workflow's page is printed, and stopping (Ctrl-C) shuts everything down."""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path

import pytest

from duroot_stream.cli.run import run_pipeline
from duroot_stream.config import KafkaConfig
from tests.kafka_helpers import wait_until
from tests.web_helpers import get

pytestmark = pytest.mark.broker


def test_run_with_serve_prints_the_result_page_and_serves_it_until_stopped(
    kafka: KafkaConfig, tmp_path: Path
) -> None:
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "f").write_bytes(b"x" * 8192)
    out, err, stop = io.StringIO(), io.StringIO(), threading.Event()
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(
            run_pipeline(
                tmp_path / "tree",
                bootstrap=kafka.bootstrap_servers,
                topic_prefix=kafka.topic_prefix,
                out=out,
                err=err,
                stop=stop,
                serve=0,
            )
        ),
        daemon=True,
    )
    thread.start()
    try:
        found = wait_until(
            lambda: re.search(r"result page: (http://\S+/workflows/(\S+))", err.getvalue()),
            timeout=120,
            what="the URL of the result page",
        )
        assert found is not None
        url, wf = found.group(1), found.group(2)
        assert f"# workflowId: {wf}" in out.getvalue()  # the result was printed first
        status, _, page = get(url)
        assert status == 200
        assert 'data-path="sub"' in page and "Completed: 2 lines." in page
        assert thread.is_alive()  # still serving
    finally:
        stop.set()
        thread.join(60)
    assert codes == [0]
    assert err.getvalue().rstrip().endswith("done")
