-- 01_unwrap_spikes: minutes in which a tenant unwrapped (decrypted) far more DEKs than usual.
--
-- Finds: per tenant and minute of the window, the DEKs unwrapped (sum of dek_count over every
--   unwrap call, whatever its result, and every read served from a reader's DEK cache — operation
--   read_cached: a decryption too, so bulk reading from the cache cannot hide) when that number is
--   at least @spike_min_deks AND above the
--   tenant's own baseline: mean + @spike_k × stddev of DEKs unwrapped per minute over the baseline
--   period. Empty baseline minutes count as 0 (a tenant busy 9 hours a day has a low mean and a
--   wide stddev, so ordinary busy minutes stay below the line). A tenant with no baseline at all
--   has threshold 0, so any minute ≥ @spike_min_deks is reported.
-- Reads: the per-minute rollup audit_events_per_minute (replays counted once), filter inside.
--
-- Parameters (named placeholders; 18.16 has no server-side parameters, see "Run by hand"):
--   @tenant          String    tenant id, '' = every tenant
--   @now             DateTime  end of the window (exclusive)
--   @window_s        UInt32    window length in seconds: window = [@now - @window_s, @now)
--   @baseline_s      UInt32    baseline length in seconds, just before the window:
--                              [@now - @window_s - @baseline_s, @now - @window_s)
--   @spike_k         Float64   stddevs above the mean (default 4)
--   @spike_min_deks  UInt32    ignore minutes with fewer DEKs unwrapped (default 50)
--
-- Result: one row per anomalous (tenant, minute): tenant_id, at (the minute), unwrapped_deks,
--   baseline_mean and baseline_stddev (DEKs per minute), threshold. Read unwrapped_deks against
--   threshold; a value many times the threshold is a bulk decryption (an export, a scraper, a
--   stolen service credential). Ordered by tenant and minute.
--
-- Run by hand (names are prefix-free, so plain sed is safe):
--   sed -e "s/@tenant/''/g" -e "s/@now/now()/g" -e "s/@window_s/3600/g" -e "s/@baseline_s/604800/g" \
--       -e "s/@spike_k/4/g" -e "s/@spike_min_deks/50/g" 01_unwrap_spikes.sql \
--     | clickhouse-client --port 19000 -d byok
SELECT
    tenant_id,
    minute AS at,
    unwrapped_deks,
    round(mean, 2) AS baseline_mean,
    round(stddev, 2) AS baseline_stddev,
    round(mean + @spike_k * stddev, 2) AS threshold
FROM
(
    SELECT
        tenant_id,
        minute,
        unwrapped_deks,
        b_sum / (@baseline_s / 60) AS mean,
        sqrt(greatest(b_sumsq / (@baseline_s / 60) - mean * mean, 0)) AS stddev
    FROM
    (
        SELECT tenant_id, minute, arraySum(arrayMap(x -> toUInt64(tupleElement(x, 2)), c)) AS unwrapped_deks
        FROM
        (
            SELECT tenant_id, minute, groupUniqArrayMerge(calls) AS c
            FROM audit_events_per_minute
            WHERE operation IN ('unwrap', 'read_cached') AND (@tenant = '' OR tenant_id = @tenant)
              AND minute >= @now - @window_s AND minute < @now
            GROUP BY tenant_id, minute
        )
    )
    ANY LEFT JOIN
    (
        SELECT tenant_id, toFloat64(sum(d)) AS b_sum, toFloat64(sum(d * d)) AS b_sumsq
        FROM
        (
            SELECT tenant_id, minute, arraySum(arrayMap(x -> toUInt64(tupleElement(x, 2)), c)) AS d
            FROM
            (
                SELECT tenant_id, minute, groupUniqArrayMerge(calls) AS c
                FROM audit_events_per_minute
                WHERE operation IN ('unwrap', 'read_cached') AND (@tenant = '' OR tenant_id = @tenant)
                  AND minute >= @now - @window_s - @baseline_s AND minute < @now - @window_s
                GROUP BY tenant_id, minute
            )
        )
        GROUP BY tenant_id
    ) USING (tenant_id)
)
WHERE unwrapped_deks >= @spike_min_deks AND unwrapped_deks > mean + @spike_k * stddev
ORDER BY tenant_id, at
