-- audit_events: one row per AuditEvent (schemas/proto/byok/v1/audit.proto), columns named as its
-- fields. Every field the hash chain covers is kept, so audit.Verify can re-check chains read back
-- from here (time is split into `time` seconds + `time_nanos`, as 18.16 has no DateTime64).
--
-- ReplacingMergeTree collapses rows with equal ORDER BY key in the same partition. A replayed event
-- is the same Kafka record (same event_id, tenant_id and time), so it has the same key and lands in
-- the same partition (toYYYYMM(time)): replays collapse. Collapsing happens at merge time, so
-- exact counts read the table with FINAL (or count distinct event_id); see README.md.
CREATE TABLE IF NOT EXISTS audit_events
(
    event_id       String,
    time           DateTime('UTC'),
    time_nanos     UInt32,
    tenant_id      String,
    provider       String,
    kek_id         String,
    kek_version    String,
    operation      String,
    scope_chat_ids Array(String),
    scope_days     Array(String),
    dek_count      UInt32,
    actor_service  String,
    actor_user     String,
    purpose        String,
    result         String,
    error_code     String,
    failed_items   UInt32,
    latency_ms     UInt32,
    worker_id      String,
    chain_id       String,
    request_id     String,
    seq            UInt64,
    prev_hash      String,
    hash           String,
    schema_version UInt32
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(time)
ORDER BY (tenant_id, time, event_id);
