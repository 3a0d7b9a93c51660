//! System tests: the control plane, its local tenants and agents, and `molecule up`, all real
//! processes on real sockets.

mod cp_auth;
mod cp_input;
mod cp_lifecycle;
mod local_saas;
mod router;
mod strict_mode;
mod support;
mod tenant_api;
mod tenant_edges;
mod tenant_saas;
