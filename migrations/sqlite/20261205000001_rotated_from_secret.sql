-- A request may still carry the token a rotation replaced (another tab's reauthentication
-- committed while it was on its way). The copy keeps the hash of the replaced secret, so that
-- such a request is recognised only with the replaced token's secret: it then leaves the
-- cookie alone, and a logout it asks for ends the copy. Copies made before have none.
ALTER TABLE auth_sessions ADD COLUMN rotated_from_secret_hash BLOB;
