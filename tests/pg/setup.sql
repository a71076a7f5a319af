-- Roles and databases of every test-bed cluster, run once by psql as the
-- superuser over the Unix socket (Rust harness and scripts/lib.sh).
-- Keep in sync with `roles` in tests/src/cluster.rs.
\set ON_ERROR_STOP on
SET password_encryption = 'scram-sha-256';
ALTER ROLE postgres PASSWORD 'postgres';
CREATE ROLE app LOGIN PASSWORD 'app';
CREATE DATABASE app OWNER app;
SET password_encryption = 'md5';
CREATE ROLE md5user LOGIN PASSWORD 'md5pass';
RESET password_encryption;
CREATE ROLE trustuser LOGIN;
\c app
GRANT ALL ON SCHEMA public TO md5user, trustuser;
