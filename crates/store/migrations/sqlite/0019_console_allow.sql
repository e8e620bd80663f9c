-- unspoof store, the web console's second schema (sqlite): the senders people allowed, the
-- console's sessions (a restart does not log everyone out) and the digests sent. Keep in step
-- with ../postgres/0019_console_allow.sql. (Issue 18's second migration: 18 was
-- already applied in the field.)

-- "Release and allow the sender": mail whose From address (or From domain, when sender starts
-- with '@') matches is not quarantined or tagged for the recipients in scope. scope_kind:
-- recipient (scope: an address), domain (scope: a recipient domain) or everyone (scope: '').
CREATE TABLE console_allow (
    id         TEXT PRIMARY KEY,
    sender     TEXT NOT NULL,
    scope_kind TEXT NOT NULL,
    scope      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    origin     TEXT
);
CREATE UNIQUE INDEX console_allow_key ON console_allow (sender, scope_kind, scope);

-- Logged-in sessions. token_hash: SHA-256 of the cookie's token (a stolen database does not
-- log anyone in).
CREATE TABLE console_sessions (
    token_hash TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    seen_at    INTEGER NOT NULL
);

-- The last quarantine digest each recipient was sent (the next covers what came after).
CREATE TABLE console_digests (
    recipient TEXT PRIMARY KEY,
    sent_at   INTEGER NOT NULL,
    until_at  INTEGER NOT NULL
);

-- The console's overview over a period, read from indexes alone: messages per verdict over
-- time, and the reason codes of the period (without a join to messages when the account sees
-- everything).
CREATE INDEX messages_time_action ON messages (received_at, action);
CREATE INDEX message_reason_time_code ON message_reason (received_at, code);

-- A search by reason code, newest first, read in index order (`Db::search_by_reason`).
CREATE INDEX message_reason_code_time_message ON message_reason (code, received_at, message);
