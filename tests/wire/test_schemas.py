"""The Avro schemas: the contract's names and docs, the released copies, and
schema evolution (every released version stays readable by the current one).

`incompatibilities(writer, reader)` is the compatibility check: it writes,
with the writer schema, values that reach every union branch and every enum
symbol, and reads each with the reader schema through fastavro's resolution.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from duroot_stream.domain import (
    NO_VC,
    Append,
    Command,
    Commit,
    Delete,
    DuRootCompleted,
    DuUpdated,
    ErrorCode,
    IndexStarted,
    Init,
    PathUsage,
    Reply,
    WorkflowEvent,
    WorkflowIndexEvent,
)
from duroot_stream.wire import Codec, CodecError, schemas_dir
from duroot_stream.wire import schemas as schemas_module
from tests.wire.test_codec_properties import to_avro  # the model as fastavro dicts

TOP_LEVEL = ["Command", "WorkflowEvent", "WorkflowIndexEvent", "Reply"]
WF = "7f1c0a3e-5b1d-4c2a-9e3f-0123456789ab"
REGISTRY = "0b0c8d4e-1111-4222-8333-444455556666"
ID1, ID2, ID3 = (
    "01HGW2N7EHJVJ4CJ999RRS2E97",
    "01HGW2N7EHJVJ4CJ999RRS2E98",
    "01HGW2N7EHJVJ4CJ999RRS2E99",
)


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def current(name: str) -> Any:
    return load(schemas_dir() / f"{name}.avsc")


def released_files() -> list[Path]:
    return sorted((schemas_dir() / "released").glob("*.avsc"))


def records(schema: Any, namespace: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every record definition in a schema, with its full name."""
    if isinstance(schema, list):
        for branch in schema:
            yield from records(branch, namespace)
    elif isinstance(schema, dict):
        ns = schema.get("namespace", namespace)
        if schema.get("type") == "record":
            yield f"{ns}.{schema['name']}", schema
            for field in schema["fields"]:
                yield from records(field["type"], ns)
        elif schema.get("type") == "array":
            yield from records(schema["items"], ns)
        elif schema.get("type") == "map":
            yield from records(schema["values"], ns)


# --- the contract -----------------------------------------------------------------

CONTRACT = {
    "io.duroot.stream.Command": [
        "command_id",
        "workflow_id",
        "expected_vid",
        "issued_at",
        "command",
    ],
    "io.duroot.stream.Init": ["registry_id", "global_root", "host", "host_root"],
    "io.duroot.stream.Append": ["paths"],
    "io.duroot.stream.PathUsage": ["path", "usage"],
    "io.duroot.stream.Commit": [],
    "io.duroot.stream.Fail": ["code", "message"],
    "io.duroot.stream.AbortExpired": [],
    "io.duroot.stream.End": [],
    "io.duroot.stream.Delete": [],
    "io.duroot.stream.WorkflowEvent": [
        "event_id",
        "parent",
        "workflow_id",
        "seq",
        "command_id",
        "payload",
    ],
    "io.duroot.stream.DuRootStarted": ["registry_id", "global_root", "host", "host_root"],
    "io.duroot.stream.DuUpdated": ["path", "usage"],
    "io.duroot.stream.DuRootCompleted": ["status_code", "status_message"],
    "io.duroot.stream.DuRootCommitted": [],
    "io.duroot.stream.WorkflowIndexEvent": [
        "event_id",
        "registry_id",
        "workflow_id",
        "workflow_event_id",
        "payload",
    ],
    "io.duroot.stream.index.DuRootStarted": ["global_root", "host", "host_root"],
    "io.duroot.stream.index.DuRootCompleted": ["status_code", "status_message"],
    "io.duroot.stream.index.DuRootDeleted": [],
    "io.duroot.stream.Reply": ["command_id", "workflow_id", "ok", "vid", "error", "message"],
}


def test_records_and_field_names_are_the_contract() -> None:
    found: dict[str, list[str]] = {}
    for name in TOP_LEVEL:
        for full_name, record in records(current(name)):
            assert full_name not in found, f"{full_name} defined twice"
            found[full_name] = [f["name"] for f in record["fields"]]
    assert found == CONTRACT


def test_every_record_and_field_has_a_doc() -> None:
    for path in [schemas_dir() / f"{n}.avsc" for n in TOP_LEVEL] + released_files():
        for full_name, record in records(load(path)):
            assert record.get("doc", "").strip(), f"{path.name}: {full_name} has no doc"
            for field in record["fields"]:
                assert field.get("doc", "").strip(), (
                    f"{path.name}: {full_name}.{field['name']} has no doc"
                )


def test_types_of_the_contract() -> None:
    command = {f["name"]: f["type"] for f in current("Command")["fields"]}
    assert command["issued_at"] == {"type": "long", "logicalType": "timestamp-millis"}
    reply = {f["name"]: f for f in current("Reply")["fields"]}
    error = reply["error"]["type"]
    assert error[0] == "null"
    assert error[1]["name"] == "ErrorCode"
    assert error[1]["symbols"] == [code.value for code in ErrorCode]
    for nullable in ("command_id", "workflow_id", "vid"):
        assert reply[nullable]["type"] == ["null", "string"]


def test_every_top_level_schema_has_a_released_v1() -> None:
    for name in TOP_LEVEL:
        released = schemas_dir() / "released" / f"{name}.v1.avsc"
        assert released.is_file(), f"keep the first released {name} in {released}"
        parsed: Any = fastavro.parse_schema(load(released))
        assert parsed["name"] == f"io.duroot.stream.{name}"


def test_the_hand_written_coders_implement_the_current_schemas() -> None:
    for name in TOP_LEVEL:
        fp = fingerprint(
            to_parsing_canonical_form(fastavro.parse_schema(current(name))), "CRC-64-AVRO"
        )
        assert schemas_module.CODED_FINGERPRINTS[name] == fp, (
            f"schemas/{name}.avsc changed: update its coder in avro.py"
        )


def test_schemas_dir_prefers_the_packaged_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site-packages" / "duroot_stream"
    (package / "schemas").mkdir(parents=True)
    monkeypatch.setattr(schemas_module, "__file__", str(package / "wire" / "schemas.py"))
    assert schemas_dir() == package / "schemas"


def test_schemas_dir_in_the_source_tree_or_the_installed_package() -> None:
    assert (schemas_dir() / "Command.avsc").is_file()
    package = Path(schemas_module.__file__).resolve().parents[1]
    if package.parent.name == "src":  # the source tree (make test)
        assert schemas_dir() == package.parents[1] / "schemas"
    else:  # installed apart (make test-pure): the schemas the wheel carries
        assert schemas_dir() == package / "schemas"


# --- the compatibility check ------------------------------------------------------

PRIMITIVE_SAMPLES: dict[str, Any] = {
    "null": None,
    "boolean": True,
    "int": 1,
    "long": 1,
    "float": 1.0,
    "double": 1.0,
    "bytes": b"x",
    "string": "x",
}


def witnesses(schema: Any, named: dict[str, Any], namespace: str = "") -> list[Any]:
    """Values of `schema` that between them take every union branch and enum symbol."""
    if isinstance(schema, str):
        if schema in PRIMITIVE_SAMPLES:
            return [PRIMITIVE_SAMPLES[schema]]
        full = schema if "." in schema else f"{namespace}.{schema}".lstrip(".")
        return witnesses(named[full], named, namespace)
    if isinstance(schema, list):
        out: list[Any] = []
        for branch in schema:
            for value in witnesses(branch, named, namespace):
                if isinstance(branch, dict) and branch.get("type") == "record":
                    ns = branch.get("namespace", namespace)
                    out.append((f"{ns}.{branch['name']}".lstrip("."), value))
                else:
                    out.append(value)
        return out
    kind = schema["type"]
    if kind == "record":
        ns = schema.get("namespace", namespace)
        named[f"{ns}.{schema['name']}".lstrip(".")] = schema
        per_field = {f["name"]: witnesses(f["type"], named, ns) for f in schema["fields"]}
        count = max((len(v) for v in per_field.values()), default=1)
        return [{k: v[i % len(v)] for k, v in per_field.items()} for i in range(count)]
    if kind == "enum":
        named[f"{schema.get('namespace', namespace)}.{schema['name']}".lstrip(".")] = schema
        return list(schema["symbols"])
    if kind == "array":
        return [witnesses(schema["items"], named, namespace), []]
    if kind == "map":
        items = witnesses(schema["values"], named, namespace)
        return [{str(i): v for i, v in enumerate(items)}]
    if kind == "fixed":
        return [bytes(schema["size"])]
    return witnesses(kind, named, namespace)  # {"type": "long", "logicalType": ...}


def incompatibilities(writer: Any, reader: Any) -> list[str]:
    """Why data written with `writer` cannot be read with `reader` (empty: it can)."""
    problems: list[str] = []
    parsed_writer = fastavro.parse_schema(copy.deepcopy(writer))
    parsed_reader = fastavro.parse_schema(copy.deepcopy(reader))
    for value in witnesses(copy.deepcopy(writer), {}):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed_writer, value)
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, parsed_writer, parsed_reader)
        except Exception as e:  # fastavro's SchemaResolutionError and friends
            problem = f"{type(e).__name__}: {e}"
            if problem not in problems:
                problems.append(problem)
    return problems


@pytest.mark.parametrize("path", released_files(), ids=lambda p: p.name)
def test_released_schemas_are_readable_by_the_current_ones(path: Path) -> None:
    name = path.name.split(".")[0]
    assert incompatibilities(load(path), current(name)) == []


def test_witnesses_reach_every_branch() -> None:
    values = witnesses(current("Command"), {})
    assert {v["command"][0].rsplit(".", 1)[1] for v in values} == {
        "Init",
        "Append",
        "Commit",
        "Fail",
        "AbortExpired",
        "End",
        "Delete",
    }
    assert {v["error"] for v in witnesses(current("Reply"), {})} == {
        None,
        *(c.value for c in ErrorCode),
    }


def _field(schema: Any, name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def test_checker_finds_a_new_field_without_default() -> None:
    new = current("Command")
    new["fields"].append({"name": "priority", "type": "int", "doc": "new"})
    problems = incompatibilities(current("Command"), new)
    assert problems and "priority" in problems[0]
    # With a default it is a compatible change.
    new["fields"][-1]["default"] = 0
    assert incompatibilities(current("Command"), new) == []


def test_checker_finds_a_new_field_deep_inside_a_union() -> None:
    new = current("WorkflowEvent")
    updated = next(b for b in _field(new, "payload")["type"] if b["name"] == "DuUpdated")
    updated["fields"].append({"name": "inodes", "type": "long", "doc": "new"})
    assert any("inodes" in p for p in incompatibilities(current("WorkflowEvent"), new))


def test_checker_finds_a_removed_union_branch() -> None:
    new = current("Command")
    union = _field(new, "command")["type"]
    union[:] = [b for b in union if b["name"] != "Delete"]
    assert incompatibilities(current("Command"), new)


def test_checker_finds_a_removed_enum_symbol() -> None:
    new = current("Reply")
    _field(new, "error")["type"][1]["symbols"].remove("MALFORMED")
    assert incompatibilities(current("Reply"), new)


def test_checker_finds_a_changed_type_and_accepts_a_promotion() -> None:
    new = current("WorkflowIndexEvent")
    _field(new, "event_id")["type"] = "long"
    assert incompatibilities(current("WorkflowIndexEvent"), new)
    new = current("WorkflowIndexEvent")
    completed = _field(new, "payload")["type"][1]
    _field(completed, "status_code")["type"] = "long"  # int -> long: a promotion
    assert incompatibilities(current("WorkflowIndexEvent"), new) == []


def test_checker_finds_a_renamed_record() -> None:
    new = current("WorkflowEvent")
    new["name"] = "Event"
    assert incompatibilities(current("WorkflowEvent"), new)


# --- the codec reads released and older schemas ------------------------------------

SAMPLES: dict[str, list[Any]] = {
    "Command": [
        Command(ID1, WF, NO_VC, 1, Init(REGISTRY, "/g", "h", "/r")),
        Command(ID1, WF, ID2, 2, Append((PathUsage("a", 1), PathUsage("ö", 1 << 62)))),
        Command(ID1, WF, ID2, 3, Commit()),
        Command(ID1, WF, ID2, 3, Delete()),
    ],
    "WorkflowEvent": [
        WorkflowEvent(ID2, ID1, WF, 3, ID3, DuUpdated("a/b", 12)),
        WorkflowEvent(ID2, ID1, WF, 4, ID3, DuRootCompleted(104, "expired")),
    ],
    "WorkflowIndexEvent": [
        WorkflowIndexEvent(ID3, REGISTRY, WF, ID2, IndexStarted("/g", "h", "/r"))
    ],
    "Reply": [
        Reply(ID1, WF, True, ID2, None, ""),
        Reply(None, None, False, None, ErrorCode.MALFORMED, "bad"),
    ],
}
DECODE = {
    "Command": Codec.decode_command,
    "WorkflowEvent": Codec.decode_event,
    "WorkflowIndexEvent": Codec.decode_index_event,
    "Reply": Codec.decode_reply,
}


def single_object(schema: Any, record: dict[str, Any]) -> bytes:
    parsed = fastavro.parse_schema(schema)
    fp = fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return b"\xc3\x01" + bytes.fromhex(fp) + buf.getvalue()


@pytest.mark.parametrize("path", released_files(), ids=lambda p: p.name)
def test_codec_decodes_data_written_with_released_schemas(path: Path) -> None:
    name = path.name.split(".")[0]
    codec = Codec()
    for value in SAMPLES[name]:
        data = single_object(load(path), to_avro(value))
        assert DECODE[name](codec, data) == value


@pytest.fixture
def older_schemas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of schemas/ whose released/ can hold made-up older versions."""
    root = tmp_path / "schemas"
    shutil.copytree(schemas_dir(), root)
    monkeypatch.setattr(schemas_module, "schemas_dir", lambda: root)
    schemas_module.catalog.cache_clear()
    yield root
    schemas_module.catalog.cache_clear()


def test_codec_resolves_an_older_schema_version(older_schemas: Path) -> None:
    """An older Command: an extra field since dropped, fewer and reordered branches."""
    v0 = current("Command")
    v0["fields"].insert(2, {"name": "sender", "type": "string", "doc": "dropped in v1"})
    union = _field(v0, "command")["type"]
    union[:] = [b for b in union if b["name"] in ("Append", "Commit", "Init")]
    (older_schemas / "released" / "Command.v0.avsc").write_text(json.dumps(v0))
    codec = Codec()
    for value in SAMPLES["Command"][:3]:
        record = {"sender": "me", **to_avro(value)}
        assert codec.decode_command(single_object(v0, record)) == value


def test_codec_reports_an_unreadable_older_version(older_schemas: Path) -> None:
    """A writer with a branch the current reader does not know: CodecError, not a crash."""
    v0 = current("Command")
    _field(v0, "command")["type"].append(
        {"type": "record", "name": "Pause", "doc": "never shipped", "fields": []}
    )
    (older_schemas / "released" / "Command.v0.avsc").write_text(json.dumps(v0))
    record = {
        "command_id": ID1,
        "workflow_id": WF,
        "expected_vid": NO_VC,
        "issued_at": 0,
        "command": ("io.duroot.stream.Pause", {}),
    }
    with pytest.raises(
        CodecError,
        match=r"invalid Avro body for Command: cannot read it as written with released Command\.v0",
    ):
        Codec().decode_command(single_object(v0, record))


def test_codec_refuses_a_schema_its_coder_does_not_implement(older_schemas: Path) -> None:
    changed = current("Reply")
    changed["fields"].append({"name": "extra", "type": "int", "default": 0, "doc": "new"})
    (older_schemas / "Reply.avsc").write_text(json.dumps(changed))
    with pytest.raises(RuntimeError, match="update _write_/_read_ for Reply"):
        Codec()
