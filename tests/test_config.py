"""Kafka settings from a properties file (`-F FILE`, `DUROOT_KAFKA_CONFIG`) under `-X`,
and secrets that never show in a repr or an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from duroot_stream.cli.main import build_parser
from duroot_stream.cli.options import kafka_config
from duroot_stream.config import (
    REDACTED,
    ConfigError,
    KafkaConfig,
    is_secret,
    parse_overrides,
    read_properties,
)

SECRET = "s3cr3t-Pa55"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kafka.properties"
    path.write_text(text)
    return path


def test_properties_file_takes_comments_blank_lines_and_spaces(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "# a comment\n\n security.protocol = SASL_SSL\nsasl.password=a=b=c\n",
    )
    assert read_properties(path) == {"security.protocol": "SASL_SSL", "sasl.password": "a=b=c"}


def test_a_bad_line_is_named_by_number_never_by_its_text(tmp_path: Path) -> None:
    path = _file(tmp_path, f"security.protocol=SASL_SSL\n{SECRET}\n")
    with pytest.raises(ConfigError) as caught:
        read_properties(path)
    assert "line 2" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.properties"):
        read_properties(tmp_path / "nope.properties")


def test_file_from_the_environment_and_x_on_top(tmp_path: Path) -> None:
    path = _file(tmp_path, "bootstrap.servers=file:9093\nacks=1\nsasl.username=u\n")
    config = KafkaConfig.from_env(overrides={"acks": "all"}, env={"DUROOT_KAFKA_CONFIG": str(path)})
    assert config.bootstrap_servers == "file:9093"
    conf = config.client(**{"acks": "0", "linger.ms": 5})
    assert conf["acks"] == "all"  # -X beats the file, which beats the service's own
    assert conf["sasl.username"] == "u"
    assert conf["linger.ms"] == 5
    assert conf["bootstrap.servers"] == "file:9093"


def test_flag_file_beats_the_environment_and_bootstrap_flags_beat_the_file(
    tmp_path: Path,
) -> None:
    flag = _file(tmp_path, "bootstrap.servers=flag:1\nclient.id=flag\n")
    other = tmp_path / "other.properties"
    other.write_text("client.id=env\n")
    env = {"DUROOT_KAFKA_CONFIG": str(other), "DUROOT_BOOTSTRAP_SERVERS": "env:2"}
    config = KafkaConfig.from_env(config_file=flag, env=env)
    assert config.overrides["client.id"] == "flag"
    assert config.bootstrap_servers == "env:2"
    assert (
        KafkaConfig.from_env(config_file=flag, bootstrap_servers="b:3", env={}).bootstrap_servers
        == "b:3"
    )


def test_cli_takes_minus_f_for_every_kafka_subcommand(tmp_path: Path) -> None:
    path = _file(tmp_path, "bootstrap.servers=f:1\nsocket.timeout.ms=1234\n")
    for argv in (
        ["topics", "check"],
        ["processor", "--instance-id", "p1"],
        ["runner", "--host", "h", "--root", "/"],
        ["status", "00000000-0000-0000-0000-000000000001"],
        ["run", str(tmp_path)],
        ["acls", "print", "--reader", "r"],
    ):
        args = build_parser().parse_args([*argv, "-F", str(path), "-X", "client.id=x"])
        config = kafka_config(args)
        assert config.bootstrap_servers == "f:1", argv
        assert config.overrides == {"socket.timeout.ms": "1234", "client.id": "x"}, argv


def test_repr_and_str_redact_every_secret() -> None:
    config = KafkaConfig(
        schema_registry_url=f"https://user:{SECRET}@registry:8081",
        overrides={
            "sasl.password": SECRET,
            "ssl.key.password": SECRET,
            "ssl.keystore.password": SECRET,
            "sasl.oauthbearer.client.secret": SECRET,
            "sasl.jaas.config": f'x password="{SECRET}";',
            "sasl.username": "alice",
        },
    )
    for text in (repr(config), str(config), f"{config}", repr([config])):
        assert SECRET not in text
        assert "alice" in text and REDACTED in text


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("sasl.password", True),
        ("ssl.key.password", True),
        ("ssl.keystore.password", True),
        ("ssl.truststore.password", True),
        ("ssl.key.pem", True),
        ("sasl.oauthbearer.client.secret", True),
        ("sasl.oauthbearer.config", True),
        ("sasl.username", False),
        ("ssl.ca.location", False),
        ("ssl.certificate.pem", False),
    ],
)
def test_which_settings_are_secret(key: str, secret: bool) -> None:
    assert is_secret(key) is secret


def test_a_malformed_secret_override_is_not_echoed() -> None:
    for typo in (f"sasl.password:{SECRET}", f"={SECRET}"):
        with pytest.raises(ConfigError) as caught:
            parse_overrides([typo])
        assert SECRET not in str(caught.value)
