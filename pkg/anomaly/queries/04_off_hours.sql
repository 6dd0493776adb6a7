-- 04_off_hours: unwraps in hours of the day (UTC) when the tenant is normally idle.
--
-- Finds: per tenant and clock hour of the window, the unwrap calls (and reads served from a
--   reader's DEK cache, operation read_cached) made in that hour when the
--   tenant's baseline activity (calls of every operation) in the same hour of the day (UTC, 0-23)
--   is below @hour_max_share of its baseline activity, and there are at least @hour_min_unwraps
--   of them. A tenant whose people work 08-18 UTC has ~0 share at 03:00, so decrypting at 03:00
--   is reported. Tenants with no baseline activity are skipped (they have no usual hours yet).
--   Hours are UTC: a tenant's local working day shows as its UTC offset.
-- Reads: the per-minute rollup audit_events_per_minute (replays counted once), filter inside.
--
-- Parameters (named placeholders; 18.16 has no server-side parameters, see "Run by hand"):
--   @tenant            String    tenant id, '' = every tenant
--   @now               DateTime  end of the window (exclusive)
--   @window_s          UInt32    window length in seconds: window = [@now - @window_s, @now)
--   @baseline_s        UInt32    baseline length in seconds, just before the window (use whole
--                                days, e.g. 7 × 86400, so every hour of the day is represented)
--   @hour_max_share    Float64   "unusual" below this share of baseline calls (default 0.01 = 1%)
--   @hour_min_unwraps  UInt32    at least this many unwrap calls in the hour (default 5)
--
-- Result: one row per (tenant, hour): tenant_id, at (start of the hour), hour_utc, unwraps and
--   unwrapped_deks in that hour of the window, baseline_hour_calls (calls in that hour of the day
--   over the whole baseline), baseline_calls (all), baseline_share_pct. 0 in baseline_hour_calls
--   means the tenant never used its keys at that time before.
--
-- Run by hand (names are prefix-free, so plain sed is safe):
--   sed -e "s/@tenant/''/g" -e "s/@now/now()/g" -e "s/@window_s/3600/g" -e "s/@baseline_s/604800/g" \
--       -e "s/@hour_max_share/0.01/g" -e "s/@hour_min_unwraps/5/g" 04_off_hours.sql \
--     | clickhouse-client --port 19000 -d byok
SELECT
    tenant_id,
    hour_start AS at,
    hour_utc,
    unwraps,
    unwrapped_deks,
    baseline_hour_calls,
    baseline_calls,
    round(100 * baseline_hour_calls / baseline_calls, 3) AS baseline_share_pct
FROM
(
    SELECT
        tenant_id,
        hour_start,
        hour_utc,
        unwraps,
        unwrapped_deks,
        baseline_calls,
        if(indexOf(b_hours, hour_utc) = 0, 0, b_counts[indexOf(b_hours, hour_utc)]) AS baseline_hour_calls
    FROM
    (
        SELECT
            tenant_id,
            toStartOfHour(minute) AS hour_start,
            toHour(minute) AS hour_utc,
            sum(length(c)) AS unwraps,
            sum(arraySum(arrayMap(x -> toUInt64(tupleElement(x, 2)), c))) AS unwrapped_deks
        FROM
        (
            SELECT tenant_id, minute, groupUniqArrayMerge(calls) AS c
            FROM audit_events_per_minute
            WHERE operation IN ('unwrap', 'read_cached') AND (@tenant = '' OR tenant_id = @tenant)
              AND minute >= @now - @window_s AND minute < @now
            GROUP BY tenant_id, minute, operation, result, purpose, actor_service
        )
        GROUP BY tenant_id, hour_start, hour_utc
    )
    ANY INNER JOIN
    (
        SELECT tenant_id, groupArray(h) AS b_hours, groupArray(n) AS b_counts, sum(n) AS baseline_calls
        FROM
        (
            SELECT tenant_id, toHour(minute) AS h, sum(length(c)) AS n
            FROM
            (
                SELECT tenant_id, minute, groupUniqArrayMerge(calls) AS c
                FROM audit_events_per_minute
                WHERE (@tenant = '' OR tenant_id = @tenant)
                  AND minute >= @now - @window_s - @baseline_s AND minute < @now - @window_s
                GROUP BY tenant_id, minute, operation, result, purpose, actor_service
            )
            GROUP BY tenant_id, h
        )
        GROUP BY tenant_id
    ) USING (tenant_id)
)
WHERE unwraps >= @hour_min_unwraps AND baseline_hour_calls < @hour_max_share * baseline_calls
ORDER BY tenant_id, at
