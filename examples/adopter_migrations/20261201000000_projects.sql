-- The adopter app's own table, beside the crate's (whose users it references).
CREATE TABLE projects (
    id    INTEGER PRIMARY KEY,
    name  TEXT NOT NULL,
    owner INTEGER NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE
);
