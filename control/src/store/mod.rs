//! The store: versioned objects, watches, durability.
