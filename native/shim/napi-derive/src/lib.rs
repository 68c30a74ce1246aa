//! Intentionally empty: see the crate description.
