-- unspoof store, schema version 3 (SQLite): DMARC aggregate reports, received and sent
-- (RFC 9990). Keep in step with ../postgres/0003_dmarc.sql: same tables, columns and indexes;
-- only the type names differ.

-- One received aggregate report. The same report (reporter, report id, policy domain and date
-- range) is stored once, however often it is ingested.
CREATE TABLE dmarc_reports (
    id             TEXT PRIMARY KEY,
    reporter       TEXT NOT NULL,
    reporter_email TEXT,
    report_id      TEXT NOT NULL,
    domain         TEXT NOT NULL,
    begin_at       INTEGER NOT NULL,
    end_at         INTEGER NOT NULL,
    format         TEXT NOT NULL,
    generator      TEXT,
    policy         TEXT NOT NULL,
    errors         TEXT,
    messages       INTEGER NOT NULL,
    source         TEXT NOT NULL,
    ingested_at    INTEGER NOT NULL,
    node           TEXT NOT NULL,
    xml_gz         BLOB NOT NULL
);
CREATE UNIQUE INDEX dmarc_reports_key ON dmarc_reports (reporter, report_id, domain, begin_at, end_at);
CREATE INDEX dmarc_reports_domain ON dmarc_reports (domain, begin_at);

-- The report's records (one <record> each), with what the picture needs.
CREATE TABLE dmarc_rows (
    report        TEXT NOT NULL,
    n             INTEGER NOT NULL,
    domain        TEXT NOT NULL,
    reporter      TEXT NOT NULL,
    begin_at      INTEGER NOT NULL,
    end_at        INTEGER NOT NULL,
    source_ip     TEXT,
    count         INTEGER NOT NULL,
    disposition   TEXT NOT NULL,
    dmarc_dkim    TEXT NOT NULL,
    dmarc_spf     TEXT NOT NULL,
    reasons       TEXT NOT NULL,
    header_from   TEXT NOT NULL,
    envelope_from TEXT,
    envelope_to   TEXT,
    dkim          TEXT NOT NULL,
    spf           TEXT NOT NULL,
    PRIMARY KEY (report, n)
);
CREATE INDEX dmarc_rows_domain ON dmarc_rows (domain, begin_at);

-- Inputs that could not be read as a report: kept whole, with the error, once per content.
CREATE TABLE dmarc_rejected (
    sha256      TEXT PRIMARY KEY,
    received_at INTEGER NOT NULL,
    source      TEXT NOT NULL,
    error       TEXT NOT NULL,
    raw         BLOB NOT NULL
);

-- Reports we send: one row per policy domain and day, claimed by one node of the fleet.
CREATE TABLE dmarc_outgoing (
    domain     TEXT NOT NULL,
    day        INTEGER NOT NULL,
    node       TEXT NOT NULL,
    claimed_at INTEGER NOT NULL,
    status     TEXT NOT NULL,
    report_id  TEXT NOT NULL,
    detail     TEXT,
    PRIMARY KEY (domain, day)
);

-- Each destination of a report we send, with its retries.
CREATE TABLE dmarc_deliveries (
    domain     TEXT NOT NULL,
    day        INTEGER NOT NULL,
    address    TEXT NOT NULL,
    status     TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    next_try   INTEGER NOT NULL,
    last_error TEXT,
    message    BLOB,
    PRIMARY KEY (domain, day, address)
);

-- Report addresses that bounced permanently: no more reports to them until `until`.
CREATE TABLE dmarc_suppressed (
    address  TEXT PRIMARY KEY,
    since    INTEGER NOT NULL,
    until_at INTEGER NOT NULL,
    reason   TEXT NOT NULL
);
