-- An address changed by anything but a confirmation (an operator's UPDATE, the sqlite3 shell)
-- is not verified: nobody proved they receive mail there. A confirmation sets the address and
-- the time it was verified together; a change of the address that leaves that time as it was
-- clears it.
CREATE TRIGGER auth_users_email_unverified AFTER UPDATE OF email ON auth_users
WHEN NEW.email IS NOT OLD.email AND NEW.email_verified_at IS OLD.email_verified_at
BEGIN
    UPDATE auth_users SET email_verified_at = NULL WHERE id = NEW.id;
END;
