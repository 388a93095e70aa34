//! The static HTTP responder every e2e peer is measured against. Being written.
fn main() {}
