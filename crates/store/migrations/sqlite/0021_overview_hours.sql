-- unspoof store, the console overview's hourly rollups (sqlite). Keep in step with
-- ../postgres/0021_overview_hours.sql: same table and key; PostgreSQL keeps it with statement
-- triggers, SQLite with row triggers. (Numbered after its issue's third schema, 21.)
-- Since 0023 SQLite's inserts are counted once per batch by the batch writer (`Rollup` in
-- src/db.rs), not by the two insert triggers below; the delete triggers stay.
--
-- The invariant (docs/store.md, "Rollups"): for every hour h (a multiple of 3600) and key k,
-- overview_hours (kind, h, k).n is the number of rows of messages (message_reason for the
-- reasons) received in [h, h + 3600) with that key, that is, what the overview would count by
-- reading the records:
--   verdict: messages, k = action;
--   reason:  message_reason, k = code;
--   forged:  messages quarantined or rejected with a From domain, k = from_domain;
--   source:  messages quarantined or rejected with a client address, k = client_ip.
-- It holds because the triggers run in the transaction of the insert or delete that changes
-- the records, and only for rows actually inserted or deleted: a replayed record (the journal,
-- a second node) is an INSERT ... ON CONFLICT DO NOTHING that inserts nothing and fires
-- nothing; retention's DELETE takes its counts back out. Records are never updated (a
-- quarantine release or delete changes the quarantine table, not the record of the verdict).
CREATE TABLE overview_hours (
    kind TEXT NOT NULL,
    hour INTEGER NOT NULL,
    k    TEXT NOT NULL,
    n    INTEGER NOT NULL,
    PRIMARY KEY (kind, hour, k)
);

INSERT INTO overview_hours (kind, hour, k, n)
SELECT 'verdict', (received_at / 3600) * 3600, action, COUNT(*) FROM messages GROUP BY 2, 3;
INSERT INTO overview_hours (kind, hour, k, n)
SELECT 'reason', (received_at / 3600) * 3600, code, COUNT(*) FROM message_reason GROUP BY 2, 3;
INSERT INTO overview_hours (kind, hour, k, n)
SELECT 'forged', (received_at / 3600) * 3600, from_domain, COUNT(*) FROM messages
WHERE action IN ('quarantine', 'reject') AND from_domain IS NOT NULL GROUP BY 2, 3;
INSERT INTO overview_hours (kind, hour, k, n)
SELECT 'source', (received_at / 3600) * 3600, client_ip, COUNT(*) FROM messages
WHERE action IN ('quarantine', 'reject') AND client_ip IS NOT NULL GROUP BY 2, 3;

CREATE TRIGGER overview_hours_message_in AFTER INSERT ON messages
BEGIN
    INSERT INTO overview_hours (kind, hour, k, n)
    VALUES ('verdict', (NEW.received_at / 3600) * 3600, NEW.action, 1)
    ON CONFLICT (kind, hour, k) DO UPDATE SET n = n + 1;
    INSERT INTO overview_hours (kind, hour, k, n)
    SELECT 'forged', (NEW.received_at / 3600) * 3600, NEW.from_domain, 1
    WHERE NEW.action IN ('quarantine', 'reject') AND NEW.from_domain IS NOT NULL
    ON CONFLICT (kind, hour, k) DO UPDATE SET n = n + 1;
    INSERT INTO overview_hours (kind, hour, k, n)
    SELECT 'source', (NEW.received_at / 3600) * 3600, NEW.client_ip, 1
    WHERE NEW.action IN ('quarantine', 'reject') AND NEW.client_ip IS NOT NULL
    ON CONFLICT (kind, hour, k) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER overview_hours_reason_in AFTER INSERT ON message_reason
BEGIN
    INSERT INTO overview_hours (kind, hour, k, n)
    VALUES ('reason', (NEW.received_at / 3600) * 3600, NEW.code, 1)
    ON CONFLICT (kind, hour, k) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER overview_hours_message_out AFTER DELETE ON messages
BEGIN
    UPDATE overview_hours SET n = n - 1
    WHERE kind = 'verdict' AND hour = (OLD.received_at / 3600) * 3600 AND k = OLD.action;
    UPDATE overview_hours SET n = n - 1
    WHERE kind = 'forged' AND hour = (OLD.received_at / 3600) * 3600 AND k = OLD.from_domain
      AND OLD.action IN ('quarantine', 'reject');
    UPDATE overview_hours SET n = n - 1
    WHERE kind = 'source' AND hour = (OLD.received_at / 3600) * 3600 AND k = OLD.client_ip
      AND OLD.action IN ('quarantine', 'reject');
    DELETE FROM overview_hours
    WHERE hour = (OLD.received_at / 3600) * 3600 AND n <= 0
      AND ((kind = 'verdict' AND k = OLD.action)
        OR (kind = 'forged' AND k = OLD.from_domain)
        OR (kind = 'source' AND k = OLD.client_ip));
END;

CREATE TRIGGER overview_hours_reason_out AFTER DELETE ON message_reason
BEGIN
    UPDATE overview_hours SET n = n - 1
    WHERE kind = 'reason' AND hour = (OLD.received_at / 3600) * 3600 AND k = OLD.code;
    DELETE FROM overview_hours
    WHERE kind = 'reason' AND hour = (OLD.received_at / 3600) * 3600 AND k = OLD.code AND n <= 0;
END;
