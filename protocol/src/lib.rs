//! PostgreSQL wire protocol codec.
