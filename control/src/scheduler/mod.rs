//! The scheduler: filter then score.
