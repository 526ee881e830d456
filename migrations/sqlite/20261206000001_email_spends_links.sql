-- An address changed by anything but a confirmation (an operator's UPDATE, the sqlite3 shell)
-- spends the user's pending links, as a confirmation does: a link asking to change the address,
-- sent before an operator set the address back by hand, can no longer undo the operator's fix.
-- Only the verification links for the new address itself are left, for a confirmation to spend.
CREATE TRIGGER auth_users_email_spends_tokens AFTER UPDATE OF email ON auth_users
WHEN NEW.email IS NOT OLD.email
BEGIN
    DELETE FROM auth_tokens
     WHERE user_id = NEW.id
       AND NOT (purpose = 'email_verification' AND email IS NEW.email);
END;
