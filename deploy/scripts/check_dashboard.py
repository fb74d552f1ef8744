#!/usr/bin/env python3
"""Checks deploy/grafana/*.json: valid JSON, and every `entra_sync_*` metric a panel queries is
one the code emits (a string literal in a Rust file), so a renamed metric cannot leave the
dashboard silently empty. (`temporal_*` names come from the Temporal SDK and are asserted by
tests/e2e/shutdown.rs.)"""

import json
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parents[2]
emitted = set()
for path in root.glob("**/*.rs"):
    if "target" in path.parts or ".tools" in path.parts:
        continue
    emitted.update(re.findall(r'"(entra_sync_[a-z_]+)"', path.read_text(encoding="utf-8")))
problems = []
for dashboard in sorted((root / "deploy" / "grafana").glob("*.json")):
    data = json.loads(dashboard.read_text(encoding="utf-8"))
    for panel in data.get("panels", []):
        for target in panel.get("targets", []):
            for name in re.findall(r"entra_sync_[a-z_]+", target.get("expr", "")):
                if name not in emitted:
                    problems.append(f"{dashboard.name}: panel '{panel['title']}' queries {name}, which no code emits")
for problem in problems:
    print(problem, file=sys.stderr)
print(f"dashboards checked against {len(emitted)} emitted metric names")
sys.exit(1 if problems else 0)
