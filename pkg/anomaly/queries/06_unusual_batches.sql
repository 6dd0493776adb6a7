-- 06_unusual_batches: calls carrying far more DEKs than the tenant's calls usually do.
--
-- Finds: calls in the window whose dek_count is above the tenant's own usual for that operation:
--   threshold = greatest(@batch_p99_factor × p99, @batch_median_factor × median) of dek_count over
--   the tenant's calls of the same operation in the baseline period. Both factors keep ordinary
--   traffic quiet: p99 alone would flag 1% of normal calls. (tenant, operation) pairs with fewer
--   than @batch_min_baseline baseline calls are skipped (no usual size yet). One large batch is
--   one DEK-unwrapping call for many chats/days: a bulk export or a scraper that learned to batch.
-- Reads: audit_events FINAL.
--
-- Parameters (named placeholders; 18.16 has no server-side parameters, see "Run by hand"):
--   @tenant               String    tenant id, '' = every tenant
--   @now                  DateTime  end of the window (exclusive)
--   @window_s             UInt32    window length in seconds: window = [@now - @window_s, @now)
--   @baseline_s           UInt32    baseline length in seconds, just before the window
--   @batch_p99_factor     Float64   multiple of the baseline p99 (default 2)
--   @batch_median_factor  Float64   multiple of the baseline median (default 10)
--   @batch_min_baseline   UInt32    baseline calls needed per tenant and operation (default 100)
--
-- Result: one row per (tenant, operation, actor_service, actor_user, purpose) with such calls:
--   at (first one), calls, max_dek_count, total_deks, baseline_median, baseline_p99, threshold.
--
-- Run by hand (names are prefix-free, so plain sed is safe):
--   sed -e "s/@tenant/''/g" -e "s/@now/now()/g" -e "s/@window_s/3600/g" -e "s/@baseline_s/604800/g" \
--       -e "s/@batch_p99_factor/2/g" -e "s/@batch_median_factor/10/g" -e "s/@batch_min_baseline/100/g" \
--       06_unusual_batches.sql | clickhouse-client --port 19000 -d byok
SELECT
    tenant_id,
    min(time) AS at,
    operation,
    actor_service,
    actor_user,
    purpose,
    count() AS calls,
    max(dek_count) AS max_dek_count,
    sum(dek_count) AS total_deks,
    baseline_median,
    baseline_p99,
    threshold
FROM
(
    SELECT
        tenant_id, time, operation, actor_service, actor_user, purpose, dek_count,
        baseline_median, baseline_p99,
        greatest(@batch_p99_factor * baseline_p99, @batch_median_factor * baseline_median) AS threshold
    FROM
    (
        SELECT tenant_id, time, operation, actor_service, actor_user, purpose, dek_count
        FROM audit_events FINAL
        WHERE (@tenant = '' OR tenant_id = @tenant) AND time >= @now - @window_s AND time < @now
    )
    ANY INNER JOIN
    (
        SELECT
            tenant_id,
            operation,
            quantileExact(0.5)(dek_count) AS baseline_median,
            quantileExact(0.99)(dek_count) AS baseline_p99,
            count() AS baseline_calls
        FROM audit_events FINAL
        WHERE (@tenant = '' OR tenant_id = @tenant)
          AND time >= @now - @window_s - @baseline_s AND time < @now - @window_s
        GROUP BY tenant_id, operation
        HAVING baseline_calls >= @batch_min_baseline
    ) USING (tenant_id, operation)
)
WHERE dek_count > threshold
GROUP BY tenant_id, operation, actor_service, actor_user, purpose, baseline_median, baseline_p99, threshold
ORDER BY tenant_id, at, operation, actor_service, actor_user, purpose
