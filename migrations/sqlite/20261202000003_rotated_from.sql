-- A rotated session remembers the session it was copied from, so that revoking that session
-- while the rotation commits ends the copy too.
ALTER TABLE auth_sessions ADD COLUMN rotated_from TEXT NULL;
