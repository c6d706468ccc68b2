"""``[retention] keep_last`` / ``keep_every``: after each checkpoint is recorded, delete the
older ones that are not kept, through the backend's REST client
(``delete_checkpoint_from_tinker_path``: the SDK's on Tinker, files under the run dir on the
local backend). The latest checkpoint (``--resume`` starts from it) and the final one are
never deleted; deleted rows stay in ``checkpoints.jsonl``, marked ``"removed": true``."""

from __future__ import annotations

from typing import Any

import tinkerplug
from tinkerplug.hook_types import CheckpointRecord
from tinkerplug.rundir import mark_removed, read_checkpoints


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    from tinkerplug_retention.settings import RetentionSettings

    register("retention", RetentionSettings)


def to_remove(rows: list[CheckpointRecord], keep_last: int | None, keep_every: int | None) -> list[CheckpointRecord]:
    """The checkpoints (not yet removed) that neither rule keeps; never the latest or a final one."""
    live = [row for row in rows if not row.removed]
    if not live or (keep_last is None and keep_every is None):
        return []
    kept = {id(live[-1])} | {id(row) for row in live if row.final}
    if keep_last is not None:
        kept |= {id(row) for row in live[-keep_last:]}
    if keep_every is not None:
        kept |= {id(row) for row in live if row.step % keep_every == 0}
    return [row for row in live if id(row) not in kept]


@tinkerplug.hookimpl
def on_checkpoint(record: CheckpointRecord, run: Any) -> None:
    settings = run.config.section("retention")
    doomed = to_remove(read_checkpoints(run.run_dir), settings.keep_last, settings.keep_every)
    if not doomed:
        return
    rest = run.service_client.create_rest_client()
    removed = set()
    for row in doomed:
        try:
            for path in dict.fromkeys((row.sampler_path, row.state_path)):  # sampler first: the state resumes
                rest.delete_checkpoint_from_tinker_path(path).result()
        except Exception as exc:  # noqa: BLE001 - a checkpoint left behind costs space, not the run
            run.plugins.warn(run.config, f"retention: could not delete the step-{row.step} checkpoint: {exc}")
            continue
        removed.add(row.step)
    if removed:
        mark_removed(run.run_dir, removed)
        steps = ", ".join(str(s) for s in sorted(removed))
        run.plugins.note(run.config, f"retention: removed the checkpoints of steps {steps}")
