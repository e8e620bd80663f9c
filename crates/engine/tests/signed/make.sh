#!/usr/bin/env bash
# Makes signed test messages with the real tools, into the folder $1:
#   GnuPG (PGP/MIME and inline; RSA and Ed25519; a revoked, an expired, a 1024-bit key; SHA-1)
#   OpenSSL `cms -sign` (multipart/signed and opaque signed-data; a test CA; an expired and a
#   wrong-identity certificate).
# Layout: $1/keyring/*.asc (public keys to trust), $1/ca.pem (the test CA), $1/msg/*.eml,
# $1/gnupg (the GnuPG home, for verifying again after delivery).
# Used by crates/engine/tests/signed.rs and crates/cli/tests/signed.rs. Needs gpg and openssl
# (scripts/deps-engine.sh).
set -euo pipefail
out=$1
mkdir -p "$out/keyring" "$out/msg" "$out/work"
export GNUPGHOME="$out/gnupg"
mkdir -p -m 700 "$GNUPGHOME"
w=$out/work
G=(gpg --batch --quiet --no-tty --pinentry-mode loopback --passphrase '' --no-auto-check-trustdb --trust-model always)

gen() { # uid algo expiry [faked-time]
  local extra=()
  [ -n "${4:-}" ] && extra=(--faked-system-time "$4")
  "${G[@]}" "${extra[@]}" --quick-gen-key "$1" "$2" sign "$3" 2>/dev/null
}
gen 'Alice <alice@example.com>' rsa3072 never
gen 'Bob <bob@example.org>' ed25519 never
gen 'Carol <carol@example.com>' ed25519 never
gen 'Dave <dave@example.com>' ed25519 1y 20200101T000000!
gen 'Eve <eve@example.com>' rsa1024 never
# Frank's key is not in the keyring: his messages carry it (Autocrypt), trust on first use.
gen 'Frank <frank@example.com>' ed25519 never
for who in alice bob carol dave eve; do
  "${G[@]}" --armor --export "$who@" >"$out/keyring/$who.asc"
done

headers() { # from subject
  printf 'From: %s\r\nTo: Bob <bob@example.net>\r\nSubject: %s\r\nDate: Mon, 07 Dec 2026 09:00:00 +0000\r\nMessage-ID: <%s@example.com>\r\nMIME-Version: 1.0\r\n%s' "$1" "$2" "$RANDOM$RANDOM" "${EXTRA:-}"
}
part() { # text
  printf 'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n%s\r\nThe invoice number is 4711.\r\n' "$1"
}

pgp_mime() { # name from signer text [gpg options...]
  local name=$1 from=$2 signer=$3 text=$4; shift 4
  part "$text" >"$w/$name.part"
  "${G[@]}" "$@" --local-user "$signer" --armor --detach-sign -o "$w/$name.asc" "$w/$name.part"
  {
    headers "$from" "PGP/MIME $name"
    printf 'Content-Type: multipart/signed; micalg=pgp-sha256; protocol="application/pgp-signature"; boundary="=-sig-%s"\r\n\r\n' "$name"
    printf 'This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n--=-sig-%s\r\n' "$name"
    cat "$w/$name.part"
    printf '\r\n--=-sig-%s\r\nContent-Type: application/pgp-signature; name="signature.asc"\r\n\r\n' "$name"
    sed 's/$/\r/' "$w/$name.asc"
    printf '\r\n--=-sig-%s--\r\n' "$name"
  } >"$out/msg/$name.eml"
}
pgp_inline() { # name from signer text [gpg options...]
  local name=$1 from=$2 signer=$3 text=$4; shift 4
  printf '%s\nThe invoice number is 4711.\n' "$text" >"$w/$name.txt"
  "${G[@]}" "$@" --local-user "$signer" --clearsign -o "$w/$name.txt.asc" "$w/$name.txt"
  {
    headers "$from" "inline $name"
    printf 'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n'
    sed 's/$/\r/' "$w/$name.txt.asc"
  } >"$out/msg/$name.eml"
}

pgp_mime pgp-mime-rsa 'Alice <alice@example.com>' alice@ 'Let us meet on Tuesday.'
pgp_mime pgp-mime-ed25519 'Bob <bob@example.org>' bob@ 'Let us meet on Tuesday.'
pgp_inline pgp-inline-rsa 'Alice <alice@example.com>' alice@ 'Let us meet on Tuesday.'
pgp_inline pgp-inline-ed25519 'Bob <bob@example.org>' bob@ 'Let us meet on Tuesday.'
pgp_mime pgp-other-signer 'Alice <alice@example.com>' bob@ 'Pay the new account.'
pgp_mime pgp-expired 'Dave <dave@example.com>' dave@ 'Old news.' --faked-system-time 20200601T000000!
pgp_mime pgp-sha1 'Alice <alice@example.com>' alice@ 'Weak hash.' --digest-algo SHA1
pgp_mime pgp-small-key 'Eve <eve@example.com>' eve@ 'Small key.'
EXTRA="Autocrypt: addr=frank@example.com; keydata=$("${G[@]}" --export frank@ | base64 -w0)"$'\r\n' \
  pgp_mime pgp-autocrypt 'Frank <frank@example.com>' frank@ 'Hello from Frank.'
# A second key for the same address: a changed key (trust on first use).
"${G[@]}" --yes --quick-gen-key 'Frank <frank@example.com>' ed25519 sign never 2>/dev/null
frank2=$("${G[@]}" --with-colons --list-keys frank@ | awk -F: '/^fpr/{f=$10} END{print f}')
EXTRA="Autocrypt: addr=frank@example.com; keydata=$("${G[@]}" --export "$frank2" | base64 -w0)"$'\r\n' \
  pgp_mime pgp-autocrypt-newkey 'Frank <frank@example.com>' "$frank2" 'Hello again, new key.'
pgp_mime pgp-revoked 'Carol <carol@example.com>' carol@ 'Signed before the revocation.'
# Revoke Carol's key with the certificate GnuPG made at generation, then re-export it.
carol_fpr=$("${G[@]}" --with-colons --list-keys carol@ | awk -F: '/^fpr/{print $10; exit}')
sed 's/^:-----BEGIN/-----BEGIN/' "$GNUPGHOME/openpgp-revocs.d/$carol_fpr.rev" >"$w/carol.rev"
"${G[@]}" --import "$w/carol.rev" 2>/dev/null
"${G[@]}" --armor --export carol@ >"$out/keyring/carol.asc"

# S/MIME: a test CA, Alice's certificate, an expired one and one for somebody else.
cd "$w"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out "$out/ca.pem" -subj "/CN=unspoof test CA" -days 3650 2>/dev/null
cat >ca.cnf <<CNF
[ca]
default_ca = test
[test]
database = $w/index.txt
new_certs_dir = $w
serial = $w/serial
default_md = sha256
policy = any
copy_extensions = none
[any]
commonName = supplied
[smime]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = emailProtection
subjectAltName = email:\${ENV::SAN}
CNF
: >index.txt
echo 1000 >serial
cert() { # name email start end
  openssl req -new -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  SAN=$2 openssl ca -batch -config ca.cnf -cert "$out/ca.pem" -keyfile ca.key -extensions smime \
    -startdate "$3" -enddate "$4" -in "$1.csr" -out "$1.pem" 2>/dev/null
}
cert alice alice@example.com 20250101000000Z 20350101000000Z
cert expired alice@example.com 20200101000000Z 20210101000000Z
cert mallory mallory@example.net 20250101000000Z 20350101000000Z
part 'Let us meet on Tuesday.' >smime.part
smime() { # name cert [options...]
  local name=$1 c=$2; shift 2
  openssl cms -sign -in smime.part -signer "$c.pem" -inkey "$c.key" -crlfeol "$@" \
    -from 'Alice <alice@example.com>' -to 'Bob <bob@example.net>' -subject "S/MIME $name" >"$name.body"
  { printf 'Date: Mon, 07 Dec 2026 09:00:00 +0000\r\nMessage-ID: <%s@example.com>\r\n' "$RANDOM$RANDOM"; cat "$name.body"; } >"$out/msg/$name.eml"
}
smime smime-detached alice
smime smime-opaque alice -nodetach
smime smime-expired expired
smime smime-other-signer mallory
smime smime-sha1 alice -md sha1

# Signed parts inside multipart/mixed, as a mailing list or a forwarder wraps them (the signed
# entity is the real tools' output, moved unchanged into the wrapper): alone (the signature
# still covers all the message shows), with a list footer after it, with a line put before it.
entity() { # message: its Content-* fields and its body, as they are
  awk 'BEGIN { h = 1 }
    h && /^\r?$/ { h = 0; print; next }
    h && /^[ \t]/ { if (keep) print; next }
    h { keep = tolower($0) ~ /^content-/; if (keep) print; next }
    { print }' "$1"
}
wrapped() { # name inner before after: multipart/mixed of [before] inner [after]
  local name=$1 inner=$2 before=$3 after=$4
  {
    headers 'Alice <alice@example.com>' "wrapped $name"
    printf 'Content-Type: multipart/mixed; boundary="=-mix-%s"\r\n\r\n' "$name"
    if [ -n "$before" ]; then
      printf -- '--=-mix-%s\r\n' "$name"
      part "$before"
    fi
    printf -- '--=-mix-%s\r\n' "$name"
    entity "$out/msg/$inner.eml"
    if [ -n "$after" ]; then
      printf '\r\n--=-mix-%s\r\n' "$name"
      printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n' "$after"
    fi
    printf '\r\n--=-mix-%s--\r\n' "$name"
  } >"$out/msg/$name.eml"
}
footer='To unsubscribe, write to list-leave@lists.example.com'
wrapped nested-pgp-alone pgp-mime-rsa '' ''
wrapped nested-pgp-footer pgp-mime-rsa '' "$footer"
wrapped nested-smime-footer smime-detached '' "$footer"
wrapped nested-smime-opaque-footer smime-opaque '' "$footer"
wrapped nested-smime-prepended smime-detached 'Please pay the new account today; the signed confirmation is below.' ''
# An inline signed block with a line put before it and a footer after it, in the same body.
{
  headers 'Alice <alice@example.com>' 'inline pgp-inline-surrounded'
  printf 'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n'
  printf 'Please pay the new account today.\r\n\r\n'
  sed 's/$/\r/' "$w/pgp-inline-rsa.txt.asc"
  printf '\r\n%s\r\n' "$footer"
} >"$out/msg/pgp-inline-surrounded.eml"
