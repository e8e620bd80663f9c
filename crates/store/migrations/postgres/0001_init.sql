-- unspoof store, schema version 1 (PostgreSQL). Keep in step with ../sqlite/0001_init.sql:
-- same tables, columns and indexes; only the type names differ.

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT,
    node        TEXT NOT NULL,
    listener    TEXT NOT NULL,
    client_ip   TEXT,
    ip_key      TEXT,
    client_port BIGINT,
    reverse_dns TEXT,
    helo        TEXT,
    tls         TEXT,
    auth_user   TEXT,
    messages    BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    bytes       BIGINT NOT NULL
);
CREATE INDEX sessions_started_at ON sessions (started_at);
CREATE INDEX sessions_ip_key ON sessions (ip_key);

CREATE TABLE messages (
    id               TEXT PRIMARY KEY,
    session_id       TEXT,
    received_at      BIGINT NOT NULL,
    node             TEXT NOT NULL,
    listener         TEXT NOT NULL,
    queue_id         TEXT,
    message_id       TEXT,
    client_ip        TEXT,
    ip_key           TEXT,
    client_port      BIGINT,
    reverse_dns      TEXT,
    helo             TEXT,
    tls              TEXT,
    auth_user        TEXT,
    mail_from        TEXT,
    mail_from_domain TEXT,
    from_header      TEXT,
    from_domain      TEXT,
    subject          TEXT,
    recipients       TEXT NOT NULL,
    size             BIGINT NOT NULL,
    action           TEXT NOT NULL,
    reasons          TEXT NOT NULL,
    reply            TEXT,
    downstream_reply TEXT,
    stored_at        TEXT,
    latency_us       BIGINT,
    auth_summary     TEXT,
    trace_summary    TEXT,
    dns              TEXT,
    analysis         TEXT,
    bytes            BIGINT NOT NULL
);
CREATE INDEX messages_received_at ON messages (received_at);
CREATE INDEX messages_session_id ON messages (session_id);
CREATE INDEX messages_message_id ON messages (message_id);
CREATE INDEX messages_queue_id ON messages (queue_id);
CREATE INDEX messages_ip_key ON messages (ip_key, received_at);
CREATE INDEX messages_mail_from_domain ON messages (mail_from_domain, received_at);
CREATE INDEX messages_from_domain ON messages (from_domain, received_at);
CREATE INDEX messages_action ON messages (action, received_at);

CREATE TABLE message_rcpt (
    message     TEXT NOT NULL,
    address     TEXT NOT NULL,
    domain      TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (message, address)
);
CREATE INDEX message_rcpt_address ON message_rcpt (address, received_at);
CREATE INDEX message_rcpt_domain ON message_rcpt (domain, received_at);

CREATE TABLE message_reason (
    message     TEXT NOT NULL,
    code        TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (message, code)
);
CREATE INDEX message_reason_code ON message_reason (code, received_at);

CREATE TABLE contacts (
    sender_domain TEXT NOT NULL,
    recipient     TEXT NOT NULL,
    first_seen    BIGINT NOT NULL,
    PRIMARY KEY (sender_domain, recipient)
);

CREATE TABLE quarantine (
    id             TEXT PRIMARY KEY,
    message_record TEXT,
    quarantined_at BIGINT NOT NULL,
    node           TEXT NOT NULL,
    queue_id       TEXT,
    message_id     TEXT,
    mail_from      TEXT,
    recipients     TEXT NOT NULL,
    from_header    TEXT,
    subject        TEXT,
    reasons        TEXT NOT NULL,
    size           BIGINT NOT NULL,
    raw            BYTEA NOT NULL,
    status         TEXT NOT NULL,
    actor          TEXT,
    acted_at       BIGINT,
    result         TEXT
);
CREATE INDEX quarantine_at ON quarantine (quarantined_at);
CREATE INDEX quarantine_status ON quarantine (status, quarantined_at);
