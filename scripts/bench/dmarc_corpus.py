#!/usr/bin/env python3
"""Writes N gzip'd DMARC aggregate reports (RFC 9990 and RFC 7489 forms, 1 to 40 records each,
like the mix big receivers send) into a folder, deterministically (seeded), for
scripts/bench-dmarc.sh. Usage: dmarc_corpus.py N OUT_DIR"""
import gzip
import os
import random
import sys

n, out = int(sys.argv[1]), sys.argv[2]
os.makedirs(out, exist_ok=True)
rng = random.Random(16)
REPORTERS = ["google.com", "outlook.com", "yahoo.com", "mail.ru", "fastmail.com", "comcast.net",
             "gmx.net", "web.de", "orange.fr", "qq.com"]
DOMAINS = ["example.org", "shop.example.org", "example.net"]


def record():
    ip = "%d.%d.%d.%d" % (rng.choice([192, 198, 203, 209, 66, 40]), rng.randrange(256),
                          rng.randrange(256), rng.randrange(1, 255))
    ours = rng.random() < 0.7
    dkim = "pass" if ours and rng.random() < 0.95 else "fail"
    spf = "pass" if ours and rng.random() < 0.8 else "fail"
    disp = "none" if (dkim == "pass" or spf == "pass") else rng.choice(["quarantine", "reject"])
    hf = rng.choice(DOMAINS)
    dkim_auth = ("<dkim><domain>%s</domain><selector>s%d</selector><result>%s</result></dkim>"
                 % (hf if ours else "spam.example", rng.randrange(3), dkim)) if rng.random() < 0.9 else ""
    return ("<record><row><source_ip>%s</source_ip><count>%d</count><policy_evaluated>"
            "<disposition>%s</disposition><dkim>%s</dkim><spf>%s</spf></policy_evaluated></row>"
            "<identifiers><envelope_from>%s</envelope_from><header_from>%s</header_from></identifiers>"
            "<auth_results>%s<spf><domain>%s</domain><scope>mfrom</scope><result>%s</result></spf>"
            "</auth_results></record>\n"
            % (ip, rng.choice([1, 1, 1, 2, 3, 5, 12, 40]), disp, dkim, spf, hf, hf, dkim_auth, hf,
               "pass" if spf == "pass" else rng.choice(["fail", "softfail", "none"])))


for i in range(n):
    reporter = rng.choice(REPORTERS)
    domain = DOMAINS[i % 2 == 0 and 0 or 2]
    begin = 1796515200 - 86400 * (i % 30)
    bis = i % 3 == 0
    records = "".join(record() for _ in range(rng.choice([1, 1, 2, 3, 4, 6, 10, 40])))
    xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<feedback%s>\n%s<report_metadata>'
           "<org_name>%s</org_name><email>noreply-dmarc@%s</email><report_id>%d%06d</report_id>"
           "<date_range><begin>%d</begin><end>%d</end></date_range></report_metadata>\n"
           "<policy_published><domain>%s</domain><adkim>r</adkim><aspf>r</aspf><p>reject</p>"
           "<sp>reject</sp>%s</policy_published>\n%s</feedback>\n"
           % (' xmlns="urn:ietf:params:xml:ns:dmarc-2.0"' if bis else "",
              "<version>1.0</version>\n", reporter, reporter, rng.randrange(10**12), i, begin,
              begin + 86399, domain, "<np>reject</np><testing>n</testing>" if bis else "<pct>100</pct>",
              records))
    name = "%s!%s!%d!%d!%d.xml.gz" % (reporter, domain, begin, begin + 86399, i)
    with open(os.path.join(out, name), "wb") as f:
        f.write(gzip.compress(xml.encode(), mtime=0))
