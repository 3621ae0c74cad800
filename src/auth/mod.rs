//! Who is asking, and what they may do (contract section 9): roles, the
//! identity a request carries, tokens and session secrets as values and as
//! the hashes stored in PostgreSQL.
//!
//! Layout: `store` holds the SQL for tokens and sessions, `authenticator`
//! turns a credential into an `Identity` (with a short cache, so a request
//! costs no query and a revocation is felt everywhere within a second), and
//! `bootstrap` makes sure an `admin` token exists. The HTTP side (which
//! route needs what, cookies, origins) is `api::access`.

pub mod authenticator;
pub mod bootstrap;
pub mod store;

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use authenticator::Authenticator;

use crate::config::Secret;

/// A role a token holds; a token may hold several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Approver,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Approver, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// What the role allows; every role may read.
    fn grants(self, permission: Permission) -> bool {
        matches!(
            (self, permission),
            (Role::Admin, _)
                | (_, Permission::Read)
                | (Role::Operator, Permission::Operate)
                | (Role::Approver, Permission::Decide)
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request wants to do; each route needs one (see `api::access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read runs, events, instances; open the WebSocket.
    Read,
    /// Create, cancel, message, pause, unpause and fork runs.
    Operate,
    /// Decide approvals (tool calls and budgets).
    Decide,
    /// Create, list and revoke tokens.
    ManageTokens,
}

impl Permission {
    /// The roles that grant it, for messages that tell a user whom to ask.
    pub fn roles(self) -> &'static str {
        match self {
            Permission::Read => "viewer, operator, approver or admin",
            Permission::Operate => "operator or admin",
            Permission::Decide => "approver or admin",
            Permission::ManageTokens => "admin",
        }
    }
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Identity {
    /// The token's name, written into the journal as the author.
    pub name: String,
    pub roles: Vec<Role>,
}

/// The name every request has under `AGENT_SERVER_AUTH=none`.
pub const ANONYMOUS: &str = "anonymous";

/// The author of what the server does on its own (an approval that expired).
pub const SYSTEM: &str = "system";

impl Identity {
    /// Everyone, under `AGENT_SERVER_AUTH=none`.
    pub fn anonymous() -> Identity {
        Identity {
            name: ANONYMOUS.into(),
            roles: Role::ALL.to_vec(),
        }
    }

    pub fn may(&self, permission: Permission) -> bool {
        self.roles.iter().any(|role| role.grants(permission))
    }
}

/// Parses a list of role names, sorted and without duplicates; `None` for an
/// empty list or an unknown name (named in the error).
pub fn parse_roles<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Vec<Role>, String> {
    let mut roles = Vec::new();
    for name in names {
        let role = Role::parse(name.trim()).ok_or_else(|| {
            format!("`{name}` is not a role; the roles are viewer, operator, approver and admin")
        })?;
        roles.push(role);
    }
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Err("a token needs at least one role".into());
    }
    Ok(roles)
}

/// Whether `name` is a valid token name: `[a-z0-9_-]{1,64}`.
pub fn valid_token_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The prefix of tokens the server makes: recognisable in a leaked file or a
/// secret scanner's report.
const TOKEN_PREFIX: &str = "ast_";
/// The prefix of session secrets (cookie values).
const SESSION_PREFIX: &str = "ass_";

/// A new random token: 32 bytes from the operating system, as hex.
pub fn new_token() -> Secret {
    Secret::new(format!("{TOKEN_PREFIX}{}", random_hex()))
}

/// A new random session secret, the value of the session cookie.
pub fn new_session_secret() -> Secret {
    Secret::new(format!("{SESSION_PREFIX}{}", random_hex()))
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    // The operating system's generator does not fail on Linux once booted;
    // a process that cannot get randomness must not make credentials.
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    hex(&bytes)
}

/// What PostgreSQL stores of a credential: its SHA-256.
pub fn credential_hash(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_the_contract_says() {
        use Permission::*;
        let table = [
            (Role::Viewer, [true, false, false, false]),
            (Role::Operator, [true, true, false, false]),
            (Role::Approver, [true, false, true, false]),
            (Role::Admin, [true, true, true, true]),
        ];
        for (role, expected) in table {
            let got = [Read, Operate, Decide, ManageTokens].map(|p| role.grants(p));
            assert_eq!(got, expected, "{role}");
        }
        let both = Identity {
            name: "x".into(),
            roles: vec![Role::Operator, Role::Approver],
        };
        assert!(both.may(Decide) && both.may(Operate) && !both.may(ManageTokens));
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("ast_") && a.expose().len() == 4 + 64);
        assert_eq!(credential_hash(a.expose()), credential_hash(a.expose()));
        assert_ne!(credential_hash(a.expose()), credential_hash(b.expose()));
        assert_eq!(
            hex(&credential_hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn names_and_roles_are_checked() {
        assert!(valid_token_name("ci-bot_2"));
        assert!(!valid_token_name(""));
        assert!(!valid_token_name("Admin"));
        assert!(!valid_token_name(&"a".repeat(65)));
        assert_eq!(
            parse_roles(["approver", "viewer", "approver"]).unwrap(),
            vec![Role::Viewer, Role::Approver]
        );
        assert!(parse_roles(["root"]).unwrap_err().contains("`root`"));
        assert!(parse_roles([]).is_err());
    }
}
