-- Mission Control accounts. Passwords are stored as argon2id PHC strings only.
CREATE TABLE admins (
    username      text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    password_hash text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
