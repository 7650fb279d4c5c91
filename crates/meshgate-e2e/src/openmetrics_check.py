"""Parses the OpenMetrics text read on stdin with the OpenMetrics parser of Prometheus' Python
client (prometheus_client.openmetrics.parser), which holds a page to OpenMetrics' rules where
text-format parsers let it pass: it refuses a page without `# EOF`, a family described twice
(or clashing with another's sample names), a counter sample without `_total`, metadata after
samples, interleaved series, and histograms whose buckets, `+Inf` and `_count` disagree. Prints
`{family: type}` as JSON; exits non-zero with the parser's error otherwise."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

text = sys.stdin.read()
families = list(text_string_to_metric_families(text))
# The parser keeps one of two identical adjacent series without a word: count them here.
lines = [line for line in text.splitlines() if not line.startswith("#")]
parsed = sum(len(f.samples) for f in families)
if parsed != len(lines):
    sys.exit(f"{len(lines)} sample lines but {parsed} samples: a series is written twice")
json.dump({f.name: f.type for f in families}, sys.stdout)
