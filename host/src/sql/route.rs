//! Routing classification (in progress).
