-- 07_control_changes: the customer's control actions — settings changes, revocations, un-revocations.
--
-- Finds: every settings_change, revoke and unrevoke event in the window, one row each: who
--   (actor_user: the admin; actor_service: the settings service), what (operation; purpose:
--   enable / disable / update for settings, chat / days / chat_days / tenant for revocations),
--   whether it took effect (result, error_code: a change refused, or not_saved), and for
--   revocations the scope (chat, '' for every chat; days "from..to"). No baseline and no
--   threshold: each one is worth seeing — "advanced encryption switched off" above all.
-- Reads: audit_events FINAL.
--
-- Parameters (named placeholders; 18.16 has no server-side parameters, see "Run by hand"):
--   @tenant    String    tenant id, '' = every tenant
--   @now       DateTime  end of the window (exclusive)
--   @window_s  UInt32    window length in seconds: window = [@now - @window_s, @now)
--
-- Result: one row per event, in time order: at, operation, purpose, actor_user, actor_service,
--   result, error_code, provider and kek_id (settings), chats and days (revocations).
--
-- Run by hand (names are prefix-free, so plain sed is safe):
--   sed -e "s/@tenant/''/g" -e "s/@now/now()/g" -e "s/@window_s/86400/g" \
--       07_control_changes.sql | clickhouse-client --port 19000 -d byok
SELECT
    tenant_id,
    time AS at,
    operation,
    purpose,
    actor_user,
    actor_service,
    result,
    error_code,
    provider,
    kek_id,
    scope_chat_ids AS chats,
    scope_days AS days
FROM audit_events FINAL
WHERE operation IN ('settings_change', 'revoke', 'unrevoke') AND (@tenant = '' OR tenant_id = @tenant)
  AND time >= @now - @window_s AND time < @now
ORDER BY tenant_id, at, event_id
