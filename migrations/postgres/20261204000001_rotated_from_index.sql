-- An event stream whose session ended asks whether a rotation copied that session (then the
-- client reconnects under the new token rather than going to the login form). Most sessions
-- were never rotated: the index holds only those that were.
CREATE INDEX auth_sessions_rotated_from ON auth_sessions (rotated_from) WHERE rotated_from IS NOT NULL;
