#!/usr/bin/env python3
"""Parses Prometheus text with the Prometheus project's own Python parser and prints its samples
as JSON, so that the tests judge `--metrics` output with a parser that shares no code with ours.

  parse_metrics.py              reads the text from stdin
  parse_metrics.py URL          fetches it (GET), e.g. http://127.0.0.1:9100/metrics

Prints {"samples": [{"family", "type", "name", "labels", "value"}, ...]}; values are numbers, or
the strings "+Inf", "-Inf", "NaN" (JSON has no such numbers). Exits 1 when the text does not
parse or the fetch fails, 3 when python3-prometheus-client is missing.
"""

import json
import math
import os
import sys
import urllib.request

DEBIAN_PYTHON = "/usr/bin/python3"

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    # The module is a Debian package: another interpreter first on PATH (pyenv, a virtualenv)
    # does not see it, Debian's own does.
    if os.path.realpath(sys.executable) != os.path.realpath(DEBIAN_PYTHON) and \
            os.path.exists(DEBIAN_PYTHON):
        os.execv(DEBIAN_PYTHON, [DEBIAN_PYTHON] + sys.argv)
    sys.stderr.write("parse_metrics.py: the Python module prometheus_client is missing; "
                     "install it: apt-get install -y python3-prometheus-client\n")
    sys.exit(3)


def json_value(value):
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


def main():
    if len(sys.argv) > 1 and sys.argv[1] != "-":
        with urllib.request.urlopen(sys.argv[1], timeout=30) as response:
            text = response.read().decode("utf-8")
    else:
        text = sys.stdin.read()
    samples = []
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.append({"family": family.name, "type": family.type, "name": sample.name,
                                "labels": dict(sample.labels), "value": json_value(sample.value)})
    except ValueError as error:
        sys.stderr.write(f"parse_metrics.py: not Prometheus text: {error}\n")
        return 1
    json.dump({"samples": samples}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
