#!/usr/bin/env python3
"""The peer side of scripts/bench-dmarc.sh: parsedmarc reads every report file of a folder
(parse_report_file, offline: no DNS, no GeoIP lookups), and prints how many reports and
messages it read. Usage: dmarc_parsedmarc.py DIR"""
import os
import sys

import parsedmarc

d = sys.argv[1]
reports = messages = failed = 0
for name in sorted(os.listdir(d)):
    try:
        r = parsedmarc.parse_report_file(os.path.join(d, name), offline=True)
    except Exception as e:  # a report parsedmarc cannot read counts as failed, like ours
        failed += 1
        continue
    reports += 1
    messages += sum(x["count"] for x in r["report"]["records"])
print("parsedmarc: %d reports, %d messages, %d failed" % (reports, messages, failed))
