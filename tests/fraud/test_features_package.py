"""`fraud.features` re-exports its public names lazily: every name resolves, and a caller that
needs only the configuration (the pipeline's params, every DVC stage) loads none of the online
modules, so that DVC does not rerun the pipeline when only serving's feature code changes."""

from __future__ import annotations

import json
import subprocess
import sys

import fraud.features


def test_every_exported_name_resolves_to_its_module_object():
    for name in fraud.features.__all__:
        value = getattr(fraud.features, name)
        home = fraud.features._HOME[name]
        module = sys.modules[f"fraud.features.{home}"]
        assert value is getattr(module, name), name
    assert set(fraud.features.__all__) == set(fraud.features._HOME)


def test_an_unknown_name_is_an_attribute_error_naming_it():
    try:
        fraud.features.no_such_feature  # noqa: B018
    except AttributeError as e:
        assert "no_such_feature" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_configuration_loads_no_online_module():
    code = (
        "import json, sys; from fraud.features import FeatureConfig; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('fraud.features'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == ["fraud.features", "fraud.features.config"]
