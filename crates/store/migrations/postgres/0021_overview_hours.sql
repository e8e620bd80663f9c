-- unspoof store, the console overview's hourly rollups (postgres). Keep in step with
-- ../sqlite/0021_overview_hours.sql: same table and key, and the same invariant (explained
-- there and in docs/store.md, "Rollups"). Here statement triggers with transition tables add
-- one batch's counts with one upsert per key, in key order (two nodes writing the same hour
-- take the rows' locks in the same order: no deadlock).
CREATE TABLE overview_hours (
    kind TEXT NOT NULL,
    hour BIGINT NOT NULL,
    k    TEXT NOT NULL,
    n    BIGINT NOT NULL,
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

-- Adds (sign 1) or takes out (sign -1) the counts of `rows`, rows of messages.
CREATE FUNCTION overview_hours_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO overview_hours (kind, hour, k, n)
        SELECT kind, hour, k, n FROM (
            SELECT 'verdict' AS kind, (received_at / 3600) * 3600 AS hour, action AS k,
                   COUNT(*) AS n FROM changed GROUP BY 2, 3
            UNION ALL
            SELECT 'forged', (received_at / 3600) * 3600, from_domain, COUNT(*) FROM changed
            WHERE action IN ('quarantine', 'reject') AND from_domain IS NOT NULL GROUP BY 2, 3
            UNION ALL
            SELECT 'source', (received_at / 3600) * 3600, client_ip, COUNT(*) FROM changed
            WHERE action IN ('quarantine', 'reject') AND client_ip IS NOT NULL GROUP BY 2, 3
        ) c ORDER BY kind, hour, k
        ON CONFLICT (kind, hour, k) DO UPDATE SET n = overview_hours.n + excluded.n;
    ELSE
        UPDATE overview_hours o SET n = o.n - c.n FROM (
            SELECT 'verdict' AS kind, (received_at / 3600) * 3600 AS hour, action AS k,
                   COUNT(*) AS n FROM gone GROUP BY 2, 3
            UNION ALL
            SELECT 'forged', (received_at / 3600) * 3600, from_domain, COUNT(*) FROM gone
            WHERE action IN ('quarantine', 'reject') AND from_domain IS NOT NULL GROUP BY 2, 3
            UNION ALL
            SELECT 'source', (received_at / 3600) * 3600, client_ip, COUNT(*) FROM gone
            WHERE action IN ('quarantine', 'reject') AND client_ip IS NOT NULL GROUP BY 2, 3
        ) c WHERE o.kind = c.kind AND o.hour = c.hour AND o.k = c.k;
        DELETE FROM overview_hours WHERE kind IN ('verdict', 'forged', 'source') AND n <= 0
          AND hour IN (SELECT DISTINCT (received_at / 3600) * 3600 FROM gone);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION overview_hours_reasons() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO overview_hours (kind, hour, k, n)
        SELECT 'reason', (received_at / 3600) * 3600, code, COUNT(*) FROM changed
        GROUP BY 2, 3 ORDER BY 2, 3
        ON CONFLICT (kind, hour, k) DO UPDATE SET n = overview_hours.n + excluded.n;
    ELSE
        UPDATE overview_hours o SET n = o.n - c.n FROM (
            SELECT (received_at / 3600) * 3600 AS hour, code AS k, COUNT(*) AS n FROM gone
            GROUP BY 1, 2
        ) c WHERE o.kind = 'reason' AND o.hour = c.hour AND o.k = c.k;
        DELETE FROM overview_hours WHERE kind = 'reason' AND n <= 0
          AND hour IN (SELECT DISTINCT (received_at / 3600) * 3600 FROM gone);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER overview_hours_message_in AFTER INSERT ON messages
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION overview_hours_messages();
CREATE TRIGGER overview_hours_message_out AFTER DELETE ON messages
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION overview_hours_messages();
CREATE TRIGGER overview_hours_reason_in AFTER INSERT ON message_reason
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION overview_hours_reasons();
CREATE TRIGGER overview_hours_reason_out AFTER DELETE ON message_reason
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION overview_hours_reasons();
