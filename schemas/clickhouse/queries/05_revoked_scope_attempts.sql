-- 05_revoked_scope_attempts: attempts to use keys of a scope the customer revoked.
--
-- Finds: every call in the window recorded with error_code = 'scope_revoked', grouped per tenant
--   and actor (service, user, purpose), with the chats and days it tried. 'scope_revoked' is the
--   code readers record for a read they refuse BEFORE the cache and the KMS because a scope in it
--   (chat × day) is under a granular revocation — invariant 3: refused calls are audited too.
--   There is no baseline: after a revocation every attempt is worth seeing (the threshold is
--   @revoked_min_attempts).
-- Reads: audit_events FINAL.
--
-- Parameters (named placeholders; 18.16 has no server-side parameters, see "Run by hand"):
--   @tenant                String    tenant id, '' = every tenant
--   @now                   DateTime  end of the window (exclusive)
--   @window_s              UInt32    window length in seconds: window = [@now - @window_s, @now)
--   @revoked_min_attempts  UInt32    report actors with at least this many attempts (default 1)
--
-- Result: one row per (tenant, actor_service, actor_user, purpose): at (first attempt), last_at,
--   attempts, chats and days (every scope named in the refused calls, sorted), operations.
--   A service retrying in a loop shows many attempts on the same chats; a user reaching for
--   several revoked chats shows many chats.
--
-- Run by hand (names are prefix-free, so plain sed is safe):
--   sed -e "s/@tenant/''/g" -e "s/@now/now()/g" -e "s/@window_s/3600/g" \
--       -e "s/@revoked_min_attempts/1/g" 05_revoked_scope_attempts.sql | clickhouse-client --port 19000 -d byok
SELECT
    tenant_id,
    min(time) AS at,
    actor_service,
    actor_user,
    purpose,
    max(time) AS last_at,
    count() AS attempts,
    arraySort(groupUniqArrayArray(scope_chat_ids)) AS chats,
    arraySort(groupUniqArrayArray(scope_days)) AS days,
    arraySort(groupUniqArray(operation)) AS operations
FROM audit_events FINAL
WHERE error_code = 'scope_revoked' AND (@tenant = '' OR tenant_id = @tenant)
  AND time >= @now - @window_s AND time < @now
GROUP BY tenant_id, actor_service, actor_user, purpose
HAVING attempts >= @revoked_min_attempts
ORDER BY tenant_id, at, actor_service, actor_user, purpose
