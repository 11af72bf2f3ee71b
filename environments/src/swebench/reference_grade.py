"""Grades test logs with the official swebench 5.0.2 package, for Kiln's same-run comparison.

Usage: python3 reference_grade.py REFERENCE_DIR CASES_JSON
REFERENCE_DIR holds the unpacked wheel (ops/setup swebench-ref). Prints one JSON list.

Shims (only what the grading import chain needs, nothing of the grading itself):
- `swebench.harness`: its __init__ imports docker, datasets and modal; a stub package whose
  __path__ is the real folder lets `swebench.harness.grading` & co import from their files.
- `unidiff`: imported by `swebench.utils` (for the JavaScript parsers' patch helpers, which are
  never called here); a stub whose PatchSet raises if anything does call it.
"""
import json
import os
import sys
import tempfile
import types

ref, cases_path = sys.argv[1], sys.argv[2]
sys.path.insert(0, ref)
import swebench  # noqa: E402

assert swebench.__version__ == "5.0.2", swebench.__version__
harness = types.ModuleType("swebench.harness")
harness.__path__ = [os.path.join(os.path.dirname(swebench.__file__), "harness")]
sys.modules["swebench.harness"] = harness
try:
    import unidiff  # noqa: F401
except ImportError:
    stub = types.ModuleType("unidiff")

    class PatchSet:  # noqa: D101
        def __init__(self, *args, **kwargs):
            raise RuntimeError("unidiff is shimmed in Kiln's reference grading")

    stub.PatchSet = PatchSet
    sys.modules["unidiff"] = stub

from swebench.harness.grading import (  # noqa: E402
    get_eval_report,
    get_eval_tests_report,
    get_logs_eval,
    get_resolution_status,
)
from swebench.harness.constants import EvalType  # noqa: E402
from swebench.harness.log_parsers import PARSER_REGISTRY  # noqa: E402
from swebench.types import TestSpec  # noqa: E402

PYTHON_PARSERS = [name for name in PARSER_REGISTRY][:20]

with open(cases_path) as f:
    cases = json.load(f)
out = []
for case in cases:
    spec = TestSpec(
        instance_id=case["instance_id"],
        image="",
        eval_script_list=[],
        repo="",
        version="",
        FAIL_TO_PASS=case["f2p"],
        PASS_TO_PASS=case["p2p"],
        log_parser=case["parser"],
        eval_type=case["eval_type"],
    )
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as log:
        log.write(case["log"])
    try:
        sm, found = get_logs_eval(spec, log.name)
        report = get_eval_report(
            spec,
            {"instance_id": case["instance_id"], "model_patch": case["model_patch"]},
            log.name,
            include_tests_status=True,
        )
    finally:
        os.unlink(log.name)
    tests = get_eval_tests_report(
        sm,
        {"FAIL_TO_PASS": case["f2p"], "PASS_TO_PASS": case["p2p"]},
        eval_type=EvalType(case["eval_type"]),
    )
    raw = {}
    for name in PYTHON_PARSERS:
        try:
            raw[name] = list(PARSER_REGISTRY[name](case["log"], spec).items())
        except IndexError:
            raw[name] = None  # the official django parser crashes on a bare `FAIL:`
    out.append(
        {
            "name": case["name"],
            "status_map": list(sm.items()),
            "found": found,
            "report": report[case["instance_id"]],
            "resolution": get_resolution_status(tests),
            "parsers": raw,
        }
    )
print(json.dumps(out))
