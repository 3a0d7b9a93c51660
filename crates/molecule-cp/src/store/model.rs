//! The rows the control plane stores, and the states they move through.

use serde::Serialize;

/// Declares a state enum with one canonical string form, used in the database and on the wire.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($text => Ok($name::$variant),)+ _ => Err(()) }
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// Where an org is in its life.
    OrgStatus {
        AwaitingPayment => "awaiting_payment",
        Provisioning => "provisioning",
        Running => "running",
        Failed => "failed",
        Suspended => "suspended",
        Deleting => "deleting",
        Purged => "purged",
    }
}

string_enum! {
    /// What the control plane last observed of a tenant instance.
    InstanceStatus {
        Pending => "pending",
        Starting => "starting",
        Running => "running",
        Unhealthy => "unhealthy",
        Stopped => "stopped",
        Failed => "failed",
        Terminated => "terminated",
    }
}

string_enum! {
    /// The state of a workspace instance, as reported to the tenant.
    WorkspaceState {
        Pending => "pending",
        Running => "running",
        Stopped => "stopped",
        Terminated => "terminated",
    }
}

string_enum! {
    PurgeStatus {
        Running => "running",
        Failed => "failed",
        Done => "done",
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Org {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub plan: String,
    pub owner_user_id: Option<String>,
    pub status: OrgStatus,
    pub is_canary: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantInstance {
    pub org_id: String,
    pub provider: String,
    pub instance_id: Option<String>,
    pub address: Option<String>,
    pub security_group_id: Option<String>,
    pub status: InstanceStatus,
    pub desired_version: String,
    pub observed_version: Option<String>,
    pub config_generation: i64,
    pub restarts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A tenant's credentials at rest: the admin token as a lookup hash and as a sealed envelope
/// (so an operator can retrieve it), and the tenant's own encryption key, sealed.
#[derive(Clone)]
pub struct TenantCredentials {
    pub org_id: String,
    pub admin_token_hash: String,
    pub admin_token_sealed: String,
    pub encryption_key_sealed: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootEvent {
    pub org_id: String,
    pub stage: String,
    pub status: String,
    pub detail: String,
    /// `cp` for steps the control plane took, `tenant` for what the tenant reported.
    pub source: String,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceInstance {
    pub workspace_id: String,
    pub org_id: String,
    pub instance_id: String,
    pub state: WorkspaceState,
    pub address: Option<String>,
    pub runtime: String,
    pub tier: i64,
    pub platform_url: String,
    #[serde(skip)]
    pub env_sealed: String,
    pub restarts: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Purge {
    pub id: String,
    pub org_id: String,
    pub slug: String,
    pub status: PurgeStatus,
    /// The last step that completed; empty before the first.
    pub last_step: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub requested_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// `ok`, `denied` or `failed`.
    pub outcome: String,
    pub detail: String,
}
