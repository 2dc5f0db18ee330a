"""Read an offline W&B run file (``run-<id>.wandb``) back, for tests.

wandb has no public reader for these files. The format is LevelDB's log format: a
7-byte file header, then 32 KiB blocks of records, each with a 7-byte header (crc32c
4 bytes, length 2 bytes little-endian, type 1 byte: 1 full, 2 first, 3 middle, 4 last);
a block tail shorter than a header is padding. Each payload is a serialized
``wandb.proto.wandb_internal_pb2.Record``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    out, pos, pending = [], HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # padding at the end of a block
            pos += left_in_block
            continue
        length = int.from_bytes(data[pos + 4:pos + 6], "little")
        kind = data[pos + 6]
        payload = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:  # zero-filled rest of a block
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        if kind in (FULL, FIRST):
            pending = payload
        else:
            pending += payload
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def _value(item) -> Any:
    return json.loads(item.value_json)


def _set(target: dict, item) -> None:
    keys = list(item.nested_key) or [item.key]
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = _value(item)


@dataclass
class OfflineRun:
    id: str = ""
    group: str = ""
    job_type: str = ""
    name: str = ""
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history_keys: set = field(default_factory=set)
    used_artifacts: list = field(default_factory=list)


def read_run(run_dir: Path) -> OfflineRun:
    """The run's identity, final config, summary, logged history keys and used artifacts."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    run = OfflineRun()
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.id, run.group, run.job_type, run.name = r.run_id, r.run_group, r.job_type, r.display_name
            for item in r.config.update:
                _set(run.config, item)
        elif kind == "config":
            for item in record.config.update:
                _set(run.config, item)
        elif kind == "summary":
            for item in record.summary.update:
                _set(run.summary, item)
        elif kind == "history":
            run.history_keys.update(item.key or "/".join(item.nested_key) for item in record.history.item)
        elif kind == "use_artifact":
            run.used_artifacts.append(record.use_artifact.name)
    run.config = {k: v.get("value", v) if isinstance(v, dict) and set(v) <= {"value", "desc"} else v
                  for k, v in run.config.items()}
    return run
