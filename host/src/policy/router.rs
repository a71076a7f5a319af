//! Built-in routing: which node runs a session's next transaction (the host-side twin of
//! the WIT `route-decision`). Until read routing comes, every transaction goes to the
//! confirmed primary; the other answers of the WIT `router` join this type with it.

/// Where a transaction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The confirmed primary (the pool holds the transaction while there is none).
    Primary,
}

/// The built-in `router.route`: the primary.
pub fn route() -> Route {
    Route::Primary
}
