-- 02_failure_bursts: minutes in which a tenant's KMS calls were denied or failed in a burst.
--
-- Finds: per tenant and minute of the window, the calls whose result is 'denied' or 'error'
--   (every operation) when all three hold: at least @fail_min_count of them, they are at least
--   @fail_min_ratio of that minute's calls, and they exceed the tenant's own baseline
--   (mean + @fail_k × stddev of failed calls per minute over the baseline period, empty minutes
--   counting as 0). A revoked KEK, a broken IAM role, someone probing keys, or a KMS outage.
-- Reads: the per-minute rollup audit_events_per_minute (replays counted once), filter inside.
--
-- Parameters (named placeholders; 18.16 has no server-side parameters, see "Run by hand"):
--   @tenant          String    tenant id, '' = every tenant
--   @now             DateTime  end of the window (exclusive)
--   @window_s        UInt32    window length in seconds: window = [@now - @window_s, @now)
--   @baseline_s      UInt32    baseline length in seconds, just before the window
--   @fail_min_count  UInt32    at least this many failed calls in the minute (default 10)
--   @fail_min_ratio  Float64   failed / all calls of the minute at least this (default 0.5)
--   @fail_k          Float64   stddevs above the baseline mean (default 4)
--
-- Result: one row per (tenant, minute): tenant_id, at (the minute), failed, denied, errors,
--   calls (all calls in the minute), failed_ratio, baseline_mean (failed calls per minute),
--   threshold. Mostly 'denied' = access refused (KEK disabled/revoked, policy); mostly 'errors'
--   = the KMS failing (look at error_code in audit_events for that minute).
--
-- Run by hand (names are prefix-free, so plain sed is safe):
--   sed -e "s/@tenant/''/g" -e "s/@now/now()/g" -e "s/@window_s/3600/g" -e "s/@baseline_s/604800/g" \
--       -e "s/@fail_min_count/10/g" -e "s/@fail_min_ratio/0.5/g" -e "s/@fail_k/4/g" \
--       02_failure_bursts.sql | clickhouse-client --port 19000 -d byok
SELECT
    tenant_id,
    minute AS at,
    failed,
    denied,
    errors,
    calls,
    round(failed / calls, 3) AS failed_ratio,
    round(mean, 3) AS baseline_mean,
    round(mean + @fail_k * stddev, 2) AS threshold
FROM
(
    SELECT
        tenant_id,
        minute,
        failed,
        denied,
        errors,
        calls,
        b_sum / (@baseline_s / 60) AS mean,
        sqrt(greatest(b_sumsq / (@baseline_s / 60) - mean * mean, 0)) AS stddev
    FROM
    (
        SELECT
            tenant_id,
            minute,
            sum(length(c)) AS calls,
            sumIf(length(c), result = 'denied') AS denied,
            sumIf(length(c), result = 'error') AS errors,
            denied + errors AS failed
        FROM
        (
            SELECT tenant_id, minute, result, groupUniqArrayMerge(calls) AS c
            FROM audit_events_per_minute
            WHERE (@tenant = '' OR tenant_id = @tenant) AND minute >= @now - @window_s AND minute < @now
            GROUP BY tenant_id, minute, operation, result, purpose, actor_service
        )
        GROUP BY tenant_id, minute
    )
    ANY LEFT JOIN
    (
        SELECT tenant_id, toFloat64(sum(f)) AS b_sum, toFloat64(sum(f * f)) AS b_sumsq
        FROM
        (
            SELECT tenant_id, minute, sum(length(c)) AS f
            FROM
            (
                SELECT tenant_id, minute, groupUniqArrayMerge(calls) AS c
                FROM audit_events_per_minute
                WHERE result IN ('denied', 'error') AND (@tenant = '' OR tenant_id = @tenant)
                  AND minute >= @now - @window_s - @baseline_s AND minute < @now - @window_s
                GROUP BY tenant_id, minute, operation, result, purpose, actor_service
            )
            GROUP BY tenant_id, minute
        )
        GROUP BY tenant_id
    ) USING (tenant_id)
)
WHERE failed >= @fail_min_count AND failed / calls >= @fail_min_ratio AND failed > mean + @fail_k * stddev
ORDER BY tenant_id, at
