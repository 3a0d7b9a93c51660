//! The per-org tenant platform server. It boots with its configuration, pulls fresh values from
//! the control plane (so nothing is frozen at provision time), reports its boot steps, and serves
//! its org's API: workspaces and their hierarchy, registry and heartbeats, tokens, secrets,
//! config, events, activity, bundles, channels.

pub mod access;
pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod cp_client;
pub mod events;
pub mod json;
pub mod lifecycle;
pub mod limits;
pub mod secrets;
pub mod startup;
pub mod state;
pub mod store;
