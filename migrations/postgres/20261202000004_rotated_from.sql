-- A rotated session remembers the session it was copied from, so that revoking that session
-- while the rotation commits (the user revokes a device that is rotating at that moment) ends
-- the copy too: before, the revoke found the old row gone, answered "no such session", and the
-- copy lived on.
ALTER TABLE auth_sessions ADD COLUMN rotated_from TEXT NULL;
