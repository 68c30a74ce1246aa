"""Strict OpenMetrics check: reads a JSON array of expositions on stdin, parses each with
prometheus_client's OpenMetrics parser (Debian's python3-prometheus-client), and prints one
line per failure: index, then the parser's error. Exit 0 when all parse."""
import json
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families

bodies = json.loads(sys.stdin.buffer.read().decode('utf-8'))
bad = 0
i = -1
for i, body in enumerate(bodies):
    try:
        for _ in text_string_to_metric_families(body):
            pass
    except Exception as e:  # any rejection is a failure of the agent's output
        bad += 1
        if bad <= 20:
            print(f"{i}\t{type(e).__name__}: {str(e)[:300]!r}")
print(f"checked {i + 1}, failed {bad}", file=sys.stderr)
sys.exit(1 if bad else 0)
