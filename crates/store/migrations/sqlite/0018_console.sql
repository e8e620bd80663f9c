-- unspoof store, the web console's schema (sqlite): its accounts and the record of what people
-- did through it. Keep in step with ../postgres/0018_console.sql: same tables,
-- columns and indexes; only the type names differ. (Numbered after its issue, 18; the
-- versions are applied in order and each once.)

-- Who may log in. role: administrator, domain_administrator or recipient; scope: the domains
-- (domain administrator) or addresses (recipient) whose mail the account may see, one
-- space-separated word each; password_hash: an argon2 PHC string.
CREATE TABLE console_accounts (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    scope         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    disabled      INTEGER NOT NULL
);

-- Every action taken through the console (log in, failed log in, release, delete), with who,
-- from where and on what.
CREATE TABLE console_actions (
    id     TEXT PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    client TEXT,
    detail TEXT
);
CREATE INDEX console_actions_at ON console_actions (at);
CREATE INDEX console_actions_target ON console_actions (target, at);
