-- audit_events_per_minute: a per-minute rollup per tenant, operation, result, purpose and actor
-- service, filled by a materialized view on every insert into audit_events.
--
-- The view sees inserted blocks, not the deduplicated table, so a replayed event reaches it twice.
-- A SummingMergeTree count would therefore double count replays. Instead each row keeps the SET of
-- its calls — (event_id, dek_count, failed_items, latency_ms) — as a groupUniqArray state: merging
-- two states of the same minute is a set union, so a replay adds nothing. Counts and sums are taken
-- from the merged set at query time (the view audit_per_minute below does it).
CREATE TABLE IF NOT EXISTS audit_events_per_minute
(
    tenant_id     String,
    minute        DateTime('UTC'),
    operation     String,
    result        String,
    purpose       String,
    actor_service String,
    calls         AggregateFunction(groupUniqArray, Tuple(String, UInt32, UInt32, UInt32))
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant_id, minute, operation, result, purpose, actor_service);

CREATE MATERIALIZED VIEW IF NOT EXISTS audit_events_per_minute_mv TO audit_events_per_minute AS
SELECT
    tenant_id,
    toStartOfMinute(time) AS minute,
    operation,
    result,
    purpose,
    actor_service,
    groupUniqArrayState(tuple(event_id, dek_count, failed_items, latency_ms)) AS calls
FROM audit_events
GROUP BY tenant_id, minute, operation, result, purpose, actor_service;

-- audit_per_minute: the rollup as numbers. Query it with WHERE on tenant_id and minute.
CREATE VIEW IF NOT EXISTS audit_per_minute AS
SELECT
    tenant_id,
    minute,
    operation,
    result,
    purpose,
    actor_service,
    length(c) AS events,
    arraySum(arrayMap(x -> toUInt64(tupleElement(x, 2)), c)) AS deks,
    arraySum(arrayMap(x -> toUInt64(tupleElement(x, 3)), c)) AS failed_items,
    arrayReduce('max', arrayMap(x -> tupleElement(x, 4), c)) AS latency_ms_max,
    if(length(c) = 0, 0, arraySum(arrayMap(x -> toUInt64(tupleElement(x, 4)), c)) / length(c)) AS latency_ms_avg
FROM
(
    SELECT tenant_id, minute, operation, result, purpose, actor_service, groupUniqArrayMerge(calls) AS c
    FROM audit_events_per_minute
    GROUP BY tenant_id, minute, operation, result, purpose, actor_service
);
