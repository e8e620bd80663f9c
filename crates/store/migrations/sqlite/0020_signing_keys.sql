-- unspoof store, trust on first use for signed mail (sqlite): the key fingerprints each From
-- address validly signed with (OpenPGP key, S/MIME certificate), first seen when. Asked before
-- a verdict (unspoof_engine::signed::SignerHistory), written after a delivered message whose
-- signature was a first use. Keep in step with ../postgres/0020_signing_keys.sql. (Numbered
-- after its issue, 20.) Kept by prune, like contacts: they are what "before" means.
CREATE TABLE signing_keys (
    address     TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    PRIMARY KEY (address, fingerprint)
);
