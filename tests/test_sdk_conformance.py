"""Every public method of the installed SDK's four clients against ``tinkerplug serve``: each
works or gets the documented refusal, and ``docs/reference/sdk-conformance.md`` is the table
this run produces (``python scripts/sdk_conformance.py --update`` rewrites it)."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import ROOT


def conformance():
    spec = importlib.util.spec_from_file_location("sdk_conformance", ROOT / "scripts" / "sdk_conformance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_every_sdk_method_works_or_is_refused_and_the_table_is_current() -> None:
    module = conformance()
    rows = module.measure()
    assert len(rows) == len(module.public_methods()) > 90  # introspection found the clients' methods
    failing = [f"{cls}.{name}: {detail}" for cls, name, kind, detail in rows if kind == "fails"]
    assert not failing, "\n".join(failing)
    refused = {f"{cls}.{name}" for cls, name, kind, _ in rows if kind == "refused"}
    assert refused <= {f"RestClient.{n}{s}" for n in ("assign_session_project", "export_session_trace", "get_audit_log",
                                                       "get_billing_usage", "whoami") for s in ("", "_async")}
    assert module.PAGE.read_text() == module.render(rows), "stale: run python scripts/sdk_conformance.py --update"
