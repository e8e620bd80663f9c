-- unspoof store, schema version 3 (PostgreSQL): DMARC aggregate reports, received and sent
-- (RFC 9990). Keep in step with ../sqlite/0003_dmarc.sql: same tables, columns and indexes;
-- only the type names differ.

-- One received aggregate report. The same report (reporter, report id, policy domain and date
-- range) is stored once, however often it is ingested.
CREATE TABLE dmarc_reports (
    id             TEXT PRIMARY KEY,
    reporter       TEXT NOT NULL,
    reporter_email TEXT,
    report_id      TEXT NOT NULL,
    domain         TEXT NOT NULL,
    begin_at       BIGINT NOT NULL,
    end_at         BIGINT NOT NULL,
    format         TEXT NOT NULL,
    generator      TEXT,
    policy         TEXT NOT NULL,
    errors         TEXT,
    messages       BIGINT NOT NULL,
    source         TEXT NOT NULL,
    ingested_at    BIGINT NOT NULL,
    node           TEXT NOT NULL,
    xml_gz         BYTEA NOT NULL
);
CREATE UNIQUE INDEX dmarc_reports_key ON dmarc_reports (reporter, report_id, domain, begin_at, end_at);
CREATE INDEX dmarc_reports_domain ON dmarc_reports (domain, begin_at);

-- The report's records (one <record> each), with what the picture needs.
CREATE TABLE dmarc_rows (
    report        TEXT NOT NULL,
    n             BIGINT NOT NULL,
    domain        TEXT NOT NULL,
    reporter      TEXT NOT NULL,
    begin_at      BIGINT NOT NULL,
    end_at        BIGINT NOT NULL,
    source_ip     TEXT,
    count         BIGINT NOT NULL,
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
    received_at BIGINT NOT NULL,
    source      TEXT NOT NULL,
    error       TEXT NOT NULL,
    raw         BYTEA NOT NULL
);

-- Reports we send: one row per policy domain and day, claimed by one node of the fleet.
CREATE TABLE dmarc_outgoing (
    domain     TEXT NOT NULL,
    day        BIGINT NOT NULL,
    node       TEXT NOT NULL,
    claimed_at BIGINT NOT NULL,
    status     TEXT NOT NULL,
    report_id  TEXT NOT NULL,
    detail     TEXT,
    PRIMARY KEY (domain, day)
);

-- Each destination of a report we send, with its retries.
CREATE TABLE dmarc_deliveries (
    domain     TEXT NOT NULL,
    day        BIGINT NOT NULL,
    address    TEXT NOT NULL,
    status     TEXT NOT NULL,
    attempts   BIGINT NOT NULL,
    next_try   BIGINT NOT NULL,
    last_error TEXT,
    message    BYTEA,
    PRIMARY KEY (domain, day, address)
);

-- Report addresses that bounced permanently: no more reports to them until `until`.
CREATE TABLE dmarc_suppressed (
    address  TEXT PRIMARY KEY,
    since    BIGINT NOT NULL,
    until_at BIGINT NOT NULL,
    reason   TEXT NOT NULL
);
