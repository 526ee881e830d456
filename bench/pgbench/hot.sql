\set n random(1, 20000)
SELECT s.secret_hash, s.user_id, u.username, u.permissions, s.authenticated_at, s.last_seen_at, s.idle_expires_at, s.expires_at, now() AS now FROM auth_sessions s JOIN auth_users u ON u.id = s.user_id WHERE s.id = (SELECT id FROM bench_ids WHERE n = :n) AND s.expires_at > now() AND s.idle_expires_at > now() AND u.disabled_at IS NULL;
