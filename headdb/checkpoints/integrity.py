"""Are a checkpoint's weight files whole? Checked at plan time from headers and sizes only.

A save interrupted by a dead job, or a copy cut short, leaves a weights file that looks like a
checkpoint until it is loaded, possibly hours into a study. These checks read a few kilobytes per
file and never load a tensor:

- `*.safetensors`: the 8-byte header length, the JSON header, and the file size, which must be
  exactly 8 + header + the end of the last tensor's data (`data_offsets`);
- `*.index.json` (sharded checkpoints): every shard its `weight_map` names exists (and is whole);
- `pytorch_model*.bin` (a zip archive since torch 1.6): the zip's central directory, which sits
  at the end of the file, is readable.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from headdb.errors import UserError

_HEADER_LIMIT = 100 << 20  # safetensors refuses headers over 100 MB, and so do we
_FIX = "the save was interrupted or the copy is incomplete: save or copy the checkpoint again, or move it aside"


def check_weights(directory: Path) -> None:
    """Raise UserError (one line naming the file) if a weights file of `directory` is not whole."""
    for index in sorted(directory.glob("*.index.json")):
        _check_index(index)
    for path in sorted(directory.glob("*.safetensors")):
        _check_safetensors(path)
    for path in sorted(directory.glob("pytorch_model*.bin")):
        if not zipfile.is_zipfile(path):
            raise UserError(f"{path}: not a readable torch archive (no zip directory at its end); {_FIX}")


def _check_safetensors(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UserError(f"{path}: truncated ({size} bytes, shorter than a safetensors header); {_FIX}")
        (n,) = struct.unpack("<Q", head)
        if n > _HEADER_LIMIT or 8 + n > size:
            raise UserError(f"{path}: truncated or not safetensors (a header of {n} bytes in a file of {size}); {_FIX}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UserError(f"{path}: its safetensors header is not valid JSON; {_FIX}") from None
    if not isinstance(header, dict):
        raise UserError(f"{path}: its safetensors header is not a JSON object; {_FIX}")
    ends = [
        t["data_offsets"][1]
        for k, t in header.items()
        if k != "__metadata__" and isinstance(t, dict) and len(t.get("data_offsets", ())) == 2
    ]
    expected = 8 + n + max(ends, default=0)
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        raise UserError(f"{path}: {what} (its header describes {expected} bytes, the file has {size}); {_FIX}")


def _check_index(index: Path) -> None:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise UserError(f"{index}: not a valid index of shards (a JSON object with a weight_map); {_FIX}") from None
    missing = [s for s in shards if not (index.parent / s).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UserError(f"{index}: shard {missing[0]}{more} of {len(shards)} is missing; {_FIX}")
