"""``load_records`` for chat JSONL files (the first-party data reader)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tinkerplug
from tinkerplug.data import DataSource


@tinkerplug.hookimpl(trylast=True)
def load_records(source: DataSource, config: Any) -> Any:
    # The reader of last resort: any path without a format another plugin claimed is read as
    # JSONL, so a file named data.txt still gets line-numbered errors.
    if source.format not in (None, "jsonl") or ":" in source.path.split("/")[0]:
        return None
    from tinkerplug_data.jsonl import JsonlRecords

    return JsonlRecords(Path(source.path), source.what)
