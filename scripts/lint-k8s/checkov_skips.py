#!/usr/bin/env python3
"""Copy rendered manifests, adding the justified checkov skips to named objects.

`operator render` prints plain Kubernetes objects; checkov only honours skips
written on the objects themselves (`checkov.io/skipN: ID=reason` annotations).
This writes a scratch copy of each file with those annotations added, from the
documented list in checkov-rendered.yaml, so every skip keeps its reason and
applies only to the objects it names. The annotation goes on the object and on
its pod template (checkov's graph checks judge the pods separately).

  checkov_skips.py SKIPS.yaml OUTDIR FILE...
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}


def main() -> int:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    skips = yaml.safe_load(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    unused = {(s["check"], o) for s in skips for o in s["objects"] if o != "*"}
    for path in map(Path, sys.argv[3:]):
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for obj in documents:
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            applying = [s for s in skips
                        if name in s["objects"] or ("*" in s["objects"] and obj["kind"] in WORKLOADS)]
            unused -= {(s["check"], name) for s in applying}
            targets = [obj["metadata"]]
            template = (obj.get("spec") or {}).get("template")
            if isinstance(template, dict):
                targets.append(template.setdefault("metadata", {}))
            for meta in targets:
                annotations = meta.setdefault("annotations", {})
                for n, skip in enumerate(applying, start=1):
                    annotations[f"checkov.io/skip{n}"] = f"{skip['check']}={skip['reason']}"
        (out / path.name).write_text(yaml.safe_dump_all(documents, sort_keys=False))
    for check, name in sorted(unused):
        print(f"FAIL stale checkov skip: {check} for {name}, which no example renders any more")
    return 1 if unused else 0


if __name__ == "__main__":
    sys.exit(main())
