#!/usr/bin/env python3
"""Parse a metrics exposition (stdin) with the official Python client, strictly.

The text must parse with both prometheus_client parsers: the OpenMetrics one (strict: types,
suffixes, the final "# EOF") and the classic Prometheus text one. Prints the samples as JSON:
[{"family", "type", "name", "labels", "value"}]. Exits 1 with the parser's error otherwise.
"""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus

text = sys.stdin.read()
try:
    families = list(openmetrics(text))
    list(prometheus(text))
except Exception as e:  # the parsers raise ValueError and friends
    print(f"invalid exposition: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
out = []
for f in families:
    for s in f.samples:
        out.append({"family": f.name, "type": f.type, "name": s.name,
                    "labels": s.labels, "value": s.value})
json.dump(out, sys.stdout)
