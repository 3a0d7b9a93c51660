//! The per-org tenant server. It boots with its configuration, pulls fresh values from the
//! control plane (so nothing is frozen at provision time), reports its boot steps, and serves
//! its org's API.

pub mod api;
pub mod bootstrap;
pub mod config;
pub mod cp_client;
pub mod startup;
pub mod store;
