#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with seed inputs from the shared test data (../shared/testdata or
# $UNSPOOF_TESTDATA): real messages for the message targets, real From/Sender/Return-Path values
# plus the known header tricks for the address target. Idempotent; corpus/ is not committed.
set -euo pipefail
cd "$(dirname "$0")"
data="${UNSPOOF_TESTDATA:-../../shared/testdata}"
if [ ! -d "$data" ]; then
    echo "seed: $data not found (set UNSPOOF_TESTDATA); starting from empty corpora" >&2
    mkdir -p corpus/{address,headers,trace,verdict_offline,verdict_zones,verdict_first_line}
    exit 0
fi
mkdir -p corpus/{address,headers,trace,verdict_offline,verdict_zones,verdict_first_line}
# Messages: 60 ham, 30 spam/phishing, the mailauth fixtures (DKIM/ARC-signed).
{
    find "$data/corpus-spamassassin/ham" -name '*.eml' | sort | head -60
    find "$data/corpus-nazario" "$data/corpus-phishing-pot" -name '*.eml' 2>/dev/null | sort | head -30
    find "$data/mailauth-fixtures" -maxdepth 1 -name '*.eml' | sort
} | while read -r f; do
    name=$(basename "$f")
    for t in headers trace; do cp -n "$f" "corpus/$t/$name"; done
    # The verdict targets read MAIL FROM from the first line (see fuzz_targets/common.rs).
    for t in verdict_offline verdict_zones; do
        [ -e "corpus/$t/$name" ] || { printf 'Xbounce@example.org\n'; cat "$f"; } > "corpus/$t/$name"
    done
done
# Address values: From, Sender, Reply-To and Return-Path values of the ham corpus...
n=0
find "$data/corpus-spamassassin/ham" -name '*.eml' | sort | head -300 | while read -r f; do
    awk 'BEGIN{IGNORECASE=1} /^\r?$/{exit} /^(from|sender|reply-to|return-path|to|cc):/{sub(/^[^:]*:/, ""); print}' "$f"
done | sort -u | head -400 | while IFS= read -r v; do
    n=$((n + 1)); printf '%s' "$v" > "corpus/address/ham-$n"
done
# ...and the tricks the ambiguity check knows (the first byte selects the parser: see address.rs).
i=0
for v in ' <b@evil.com>@legit.com' ' b@evil.com\,@legit.com' ' a@legit.com(comment@evil.com)' \
    ' "a@legit.com\"<b@evil.com>"' ' <@a.example,@b.example:user@d.example>' \
    ' =?utf-8?B?YUBsZWdpdC5jb20=?= <b@evil.com>' ' "a@legit.com"@evil.com' ' group: a@b.c, d@e.f;' \
    ' (a (b (c) d) e) x@[192.0.2.1]' ' a@legit.com@evil.com'; do
    i=$((i + 1)); printf '%s' "$v" > "corpus/address/trick-$i"
done
printf ' a@legit.com\0@evil.com' > corpus/address/trick-nul
# First lines (verdict_first_line): the malformed ones of issue 12, and real first lines.
i=0
for v in ' ' '\t' ' x' 'junk' '=?utf-8?q?Hello?=' 'From joe@football.example.com' \
    ' From: joe@football.example.com' ':x' 'From: joe@attacker.example' 'Received: from x by y; now'; do
    i=$((i + 1)); printf "$v\r\n" > "corpus/verdict_first_line/line-$i"
done
echo "seed: $(ls corpus/headers | wc -l) messages, $(ls corpus/address | wc -l) address values"
