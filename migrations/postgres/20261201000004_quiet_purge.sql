-- Deleting an expired session notifies no one. Every node's cache and event stream enforces the
-- deadlines it read, which are never later than the database's (a deadline moved earlier does
-- notify), so an expired session is refused everywhere without a notification; purging a
-- million expired sessions used to send a million, each taking the global notify lock at
-- commit and reaching every node. A session is live exactly while its idle deadline is ahead
-- (a CHECK keeps it at or before the absolute one).
DROP TRIGGER auth_sessions_notify_delete ON auth_sessions;
CREATE TRIGGER auth_sessions_notify_delete
AFTER DELETE ON auth_sessions
FOR EACH ROW
WHEN (OLD.idle_expires_at > now())
EXECUTE FUNCTION auth_notify_session();
