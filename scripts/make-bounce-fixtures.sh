#!/usr/bin/env bash
# Makes the real Postfix bounces of crates/engine/tests/fixtures/reaction/ (issue 19): a private
# Postfix instance on a loopback port plays partner.example's MX, which accepts mail for
# nobody@partner.example, relays it to its inner server which refuses the recipient, and
# bounces it; it delivers the bounces
# for shopping.example.net into a Maildir. Two messages go in with swaks, their clients set by
# XCLIENT as Postfix would have recorded them:
#   - bounce-of-ours.eml: Suzie's message as our gateway sent it (DKIM-signed d=shopping.example.net,
#     passed mx1.shopping.example.net, client 192.0.2.25);
#   - bounce-of-forgery.eml: a forgery in Suzie's name from a botnet host (203.0.113.66), unsigned.
# Usage: scripts/make-bounce-fixtures.sh [OUTDIR]   (root; needs postfix and swaks: scripts/deps-milter.sh)
set -euo pipefail
out=${1:-$(dirname "$0")/../crates/engine/tests/fixtures/reaction}
d=$(mktemp -d /tmp/unspoof-bounces.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
inner=$(free_port)
chmod 755 "$d"   # mktemp makes it 0700; the postfix user must reach data/
mkdir -p "$d"/{conf,queue,data,mail}
chown postfix "$d/data"; chown 65534:65534 "$d/mail"
cat > "$d/conf/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.partner.example
mydomain = partner.example
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_authorized_xclient_hosts = 127.0.0.0/8
alias_maps =
alias_database =
relay_domains = partner.example
transport_maps = texthash:$d/conf/transport
virtual_mailbox_domains = shopping.example.net
virtual_mailbox_base = $d/mail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
smtputf8_enable = no
biff = no
maillog_file = $d/maillog
maillog_file_prefixes = $d
CF
# partner.example's MX relays to its inner server (a second smtpd of the same instance under
# another name), which refuses the recipient: the MX bounces, as a real one does.
printf 'partner.example smtp:[127.0.0.1]:%s\n' "$inner" > "$d/conf/transport"
printf 'nobody@partner.example 550 5.1.1 User unknown in virtual mailbox table\n' > "$d/conf/access"
cat > "$d/conf/master.cf" <<CF
127.0.0.1:$port inet n - n - - smtpd
127.0.0.1:$inner inet n - n - - smtpd -o myhostname=inner.partner.example -o smtpd_recipient_restrictions=check_recipient_access,texthash:$d/conf/access,permit_mynetworks,reject
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
CF
postfix -c "$d/conf" start
trap 'postfix -c "$d/conf" stop >/dev/null 2>&1 || true; [ -n "${KEEP:-}" ] || rm -rf "$d"' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

ours="DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=shopping.example.net; s=s2026;
	t=1796623800; h=from:to:subject:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;
	b=Vb6kYSmkqRJOGmw4v8zJ2JjEJ4nBn2wqXwW4QfU0nT1o7tBbdXzB2n0B1O4sQ2kLqZ3sFh9pQ1xkC7r2wUe3Yg==
Received: from [10.0.0.44] (client44.shopping.example.net [10.0.0.44])
	by mx1.shopping.example.net (unspoof) with ESMTPSA id 01JEQ5A1B2C3
	for <nobody@partner.example>; Mon, 07 Dec 2026 07:30:00 +0000
From: Suzie Q. Public <suzie@shopping.example.net>
To: nobody@partner.example
Subject: Our order 4471
Date: Mon, 07 Dec 2026 07:30:00 +0000
Message-ID: <20261207073000.01JEQ5A1B2C3@shopping.example.net>

Hello, please confirm order 4471.
Suzie"
forged="From: Suzie Q. Public <suzie@shopping.example.net>
To: nobody@partner.example
Subject: Invoice overdue - pay today
Date: Mon, 07 Dec 2026 07:31:00 +0000
Message-ID: <a81f0c2e9d.7730@bot.example>

Please pay the attached invoice today.
Suzie"

swaks --silent 2 --server 127.0.0.1:$port --xclient-addr 192.0.2.25 --xclient-name mx1.shopping.example.net \
  --helo mx1.shopping.example.net --from suzie@shopping.example.net --to nobody@partner.example --data "$ours"
swaks --silent 2 --server 127.0.0.1:$port --xclient-addr 203.0.113.66 --xclient-name '[UNAVAILABLE]' \
  --helo bot.example --from suzie@shopping.example.net --to nobody@partner.example --data "$forged"

box="$d/mail/box/new"
for _ in $(seq 200); do [ "$(ls "$box" 2>/dev/null | wc -l)" -ge 2 ] && break; sleep 0.1; done
for f in "$box"/*; do
  if grep -q 'Our order 4471' "$f"; then cp "$f" "$out/bounce-of-ours.eml"; fi
  if grep -q 'Invoice overdue' "$f"; then cp "$f" "$out/bounce-of-forgery.eml"; fi
done
ls -l "$out"/bounce-of-*.eml
