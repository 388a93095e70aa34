//! The HTTPS API server: routing, resourceVersion, list/watch, authentication.
pub mod admission;
