"""The processes of one failover run: processors (`Fleet`) and the load client (`Load`).

Each processor is `duroot-stream processor` in a process of its own, default
settings, `--instance-id` p0, p1, ..., `--log-format json` to a log file per
run and instance (a restarted instance appends to its file), and
`-X client.id=<instance>` so that the group's description names the instance
holding each partition. The load client is `benchmarks.failover_client`'s
sender and receiver.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from benchmarks.failover_figures import PARTITIONS, Timeline
from benchmarks.workload import REPO
from duroot_stream.config import KafkaConfig
from duroot_stream.wire import Topics

CLI = "duroot_stream.cli.main"
STOP_WAIT_S = 60.0


class Fleet:
    """Processor processes of one run, by instance id."""

    def __init__(
        self, config: KafkaConfig, group: str, logs: Path, tag: str, options: tuple[str, ...]
    ) -> None:
        self.config, self.group, self.logs, self.tag = config, group, logs, tag
        self.options = options  # after the subcommand: -X ... (and the module, see `module`)
        self.module = CLI
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.admin = AdminClient({"bootstrap.servers": config.bootstrap_servers, "log_level": 0})
        self.topic = Topics(config.topic_prefix).commands

    def log_path(self, instance: str) -> Path:
        return self.logs / f"{self.tag}-{instance}.log"

    def start(self, instance: str) -> None:
        argv = [
            sys.executable, "-m", self.module, "processor",
            "--bootstrap-servers", self.config.bootstrap_servers,
            "--topic-prefix", self.config.topic_prefix,
            "--group", self.group, "--instance-id", instance, "--log-format", "json",
            "-X", f"client.id={instance}", *self.options,
        ]  # fmt: skip
        with open(self.log_path(instance), "ab") as err:
            self.procs[instance] = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO
            )

    def signal(self, instance: str, sig: signal.Signals) -> None:
        os.kill(self.procs[instance].pid, sig)

    def wait_exit(self, instance: str, timeout: float = STOP_WAIT_S) -> float:
        """Seconds until `instance` exited."""
        started = time.monotonic()
        self.procs[instance].wait(timeout)
        return time.monotonic() - started

    def check_alive(self, instances: set[str]) -> None:
        for instance in instances:
            code = self.procs[instance].poll()
            if code is not None:
                raise RuntimeError(
                    f"processor {instance} exited with {code}; see {self.log_path(instance)}"
                )

    def owners(self) -> tuple[str, dict[int, str]]:
        """The group's state and, per commands partition, the instance holding it."""
        try:
            future = self.admin.describe_consumer_groups([self.group], request_timeout=10)
            desc = future[self.group].result()
        except KafkaException:
            return "UNKNOWN", {}
        held = {  # a processor's consumer is named by its transactional id, <group>-<instance>
            tp.partition: member.client_id.removeprefix(f"{self.group}-")
            for member in desc.members
            for tp in member.assignment.topic_partitions
            if tp.topic == self.topic
        }
        return str(desc.state).rpartition(".")[2], held

    def settled(self, instances: set[str]) -> tuple[bool, dict[int, str]]:
        """Whether the group is stable with exactly `instances` holding every partition."""
        state, held = self.owners()
        ok = state == "STABLE" and len(held) == PARTITIONS and set(held.values()) == instances
        return ok, held

    def wait_settled(self, instances: set[str], timeout: float) -> dict[int, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive(instances)
            ok, held = self.settled(instances)
            if ok:
                return held
            time.sleep(0.3)
        raise RuntimeError(
            f"group {self.group}: {sorted(instances)} not holding every partition after "
            f"{timeout:.0f} s; logs in {self.logs}"
        )

    def stop(self) -> None:
        """SIGTERM to every live instance, SIGKILL to one that does not exit in time."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Load:
    """The sender and the receiver of `benchmarks.failover_client`, and their `Timeline`."""

    def __init__(
        self, config: KafkaConfig, logs: Path, tag: str, workflows: int, seed: int, rate: float
    ) -> None:
        self.timeline = Timeline(logs / f"{tag}-sent.jsonl", logs / f"{tag}-seen.jsonl")
        base = [
            sys.executable, "-m", "benchmarks.failover_client",
            "--bootstrap-servers", config.bootstrap_servers,
            "--topic-prefix", config.topic_prefix,
        ]  # fmt: skip
        self.receiver = subprocess.Popen(
            [*base[:3], "receive", *base[3:], "--out", str(self.timeline.seen_file)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.receiver.stdout is not None
        if self.receiver.stdout.readline().strip() != "ready":
            raise RuntimeError("the failover receiver did not start")
        sender = ["--workflows", str(workflows), "--seed", str(seed), "--rate", str(rate)]
        self.sender = subprocess.Popen(
            [*base[:3], "send", *base[3:], *sender, "--tag", tag,
             "--out", str(self.timeline.sent_file)],
            cwd=REPO,
        )  # fmt: skip

    def finish(self, drain_s: float = 15.0) -> None:
        """Stop sending; wait for the replies still to come (at most `drain_s`); stop."""
        self.sender.send_signal(signal.SIGTERM)
        self.sender.wait(60)
        deadline = time.monotonic() + drain_s
        self.timeline.update()
        while self.timeline.outstanding() and time.monotonic() < deadline:
            time.sleep(0.2)
            self.timeline.update()
        self.receiver.send_signal(signal.SIGTERM)
        self.receiver.wait(30)
        self.timeline.update()

    def __enter__(self) -> Load:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in (self.sender, self.receiver):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
