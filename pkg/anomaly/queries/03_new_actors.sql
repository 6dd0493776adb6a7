-- 03_new_actors: an actor or purpose a tenant has never used before asks for keys.
--
-- Finds: per tenant, every (actor_service, actor_user, purpose) seen in the window that never
--   occurs in the tenant's baseline period (any operation, any result counts as "seen"). With
--   @new_by_user = 0 the user is ignored and only new (actor_service, purpose) pairs are reported
--   — use that where actor_user is the end user (every new end user would be "new"). Tenants
--   with no events in the baseline are skipped (everything would be new).
-- Reads: audit_events FINAL.
--
-- Parameters (named placeholders; 18.16 has no server-side parameters, see "Run by hand"):
--   @tenant          String    tenant id, '' = every tenant
--   @now             DateTime  end of the window (exclusive)
--   @window_s        UInt32    window length in seconds: window = [@now - @window_s, @now)
--   @baseline_s      UInt32    baseline length in seconds, just before the window
--   @new_by_user     UInt8     1: an actor is (service, user); 0: the service only (default 1)
--
-- Result: one row per new (tenant, actor_service, actor_user, purpose): at (its first call in
--   the window), last_at, calls, deks (sum of dek_count), operations, results. A new service
--   identity, or a known service with a new purpose ("export" from a service that only ever
--   did "render"), is worth a question to whoever owns it.
--
-- Run by hand (names are prefix-free, so plain sed is safe):
--   sed -e "s/@tenant/''/g" -e "s/@now/now()/g" -e "s/@window_s/3600/g" -e "s/@baseline_s/604800/g" \
--       -e "s/@new_by_user/1/g" 03_new_actors.sql | clickhouse-client --port 19000 -d byok
SELECT
    tenant_id,
    min(time) AS at,
    actor_service,
    actor_user,
    purpose,
    max(time) AS last_at,
    count() AS calls,
    sum(dek_count) AS deks,
    arraySort(groupUniqArray(operation)) AS operations,
    arraySort(groupUniqArray(result)) AS results
FROM audit_events FINAL
WHERE (@tenant = '' OR tenant_id = @tenant)
  AND time >= @now - @window_s AND time < @now
  AND (tenant_id, actor_service, if(@new_by_user = 1, actor_user, ''), purpose) NOT IN
  (
      SELECT tenant_id, actor_service, if(@new_by_user = 1, actor_user, ''), purpose
      FROM audit_events FINAL
      WHERE (@tenant = '' OR tenant_id = @tenant)
        AND time >= @now - @window_s - @baseline_s AND time < @now - @window_s
      GROUP BY tenant_id, actor_service, actor_user, purpose
  )
  AND tenant_id IN
  (
      SELECT DISTINCT tenant_id
      FROM audit_events FINAL
      WHERE (@tenant = '' OR tenant_id = @tenant)
        AND time >= @now - @window_s - @baseline_s AND time < @now - @window_s
  )
GROUP BY tenant_id, actor_service, actor_user, purpose
ORDER BY tenant_id, at, actor_service, actor_user, purpose
