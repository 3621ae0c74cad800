//! The SQL for tokens and dashboard sessions. Only hashes are stored; the
//! values exist only in the answer that creates them.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use serde::Serialize;

use super::{Identity, Role};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a token named `{0}` exists already; token names are never reused")]
    NameTaken(String),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// A token as listed: never its value or its hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Token)]
pub struct TokenInfo {
    pub name: String,
    pub roles: Vec<Role>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

fn role_names(roles: &[Role]) -> Vec<&'static str> {
    roles.iter().map(|r| r.as_str()).collect()
}

fn roles_from(names: Vec<String>) -> Vec<Role> {
    // A role name this build does not know (written by a newer one) grants
    // nothing rather than failing the request.
    names.iter().filter_map(|n| Role::parse(n)).collect()
}

/// Stores a new token under `name`.
pub async fn create_token(
    client: &impl GenericClient,
    name: &str,
    hash: &[u8; 32],
    roles: &[Role],
    created_by: &str,
    at: DateTime<Utc>,
) -> Result<TokenInfo, Error> {
    let inserted = client
        .execute(
            "INSERT INTO api_tokens (name, hash, roles, created_at, created_by)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
            &[
                &name,
                &hash.as_slice(),
                &role_names(roles),
                &at,
                &created_by,
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(Error::NameTaken(name.to_string()));
    }
    Ok(TokenInfo {
        name: name.to_string(),
        roles: roles.to_vec(),
        created_at: at,
        created_by: created_by.to_string(),
        last_used_at: None,
        revoked_at: None,
    })
}

/// Every token, oldest first, revoked ones included.
pub async fn list_tokens(client: &impl GenericClient) -> Result<Vec<TokenInfo>, Error> {
    let rows = client
        .query(
            "SELECT name, roles, created_at, created_by, last_used_at, revoked_at
             FROM api_tokens ORDER BY created_at, name",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| TokenInfo {
            name: row.get("name"),
            roles: roles_from(row.get("roles")),
            created_at: row.get("created_at"),
            created_by: row.get("created_by"),
            last_used_at: row.get("last_used_at"),
            revoked_at: row.get("revoked_at"),
        })
        .collect())
}

/// Revokes the token `name` and ends its sessions; `false` if there is no
/// such token. Revoking twice keeps the first time.
pub async fn revoke_token(pool: &Pool, name: &str, at: DateTime<Utc>) -> Result<bool, Error> {
    let client = pool.get().await?;
    let found = client
        .query_opt(
            "WITH t AS (
                UPDATE api_tokens SET revoked_at = coalesce(revoked_at, $2)
                WHERE name = $1 RETURNING name
             ), s AS (
                DELETE FROM api_sessions WHERE token_name IN (SELECT name FROM t)
             )
             SELECT name FROM t",
            &[&name, &at],
        )
        .await?;
    Ok(found.is_some())
}

/// The active token with this hash.
pub async fn token_identity(pool: &Pool, hash: &[u8; 32]) -> Result<Option<Identity>, Error> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached("SELECT name, roles FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL")
        .await?;
    let row = client.query_opt(&statement, &[&hash.as_slice()]).await?;
    Ok(row.map(|row| Identity {
        name: row.get("name"),
        roles: roles_from(row.get("roles")),
    }))
}

/// The identity behind a live session with this hash.
pub async fn session_identity(pool: &Pool, hash: &[u8; 32]) -> Result<Option<Identity>, Error> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT t.name, t.roles FROM api_sessions s JOIN api_tokens t ON t.name = s.token_name
             WHERE s.hash = $1 AND s.expires_at > now() AND t.revoked_at IS NULL",
        )
        .await?;
    let row = client.query_opt(&statement, &[&hash.as_slice()]).await?;
    Ok(row.map(|row| Identity {
        name: row.get("name"),
        roles: roles_from(row.get("roles")),
    }))
}

/// Starts a session for the token `name`.
pub async fn create_session(
    pool: &Pool,
    hash: &[u8; 32],
    token_name: &str,
    at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), Error> {
    pool.get()
        .await?
        .execute(
            "INSERT INTO api_sessions (hash, token_name, created_at, expires_at)
             VALUES ($1, $2, $3, $4)",
            &[&hash.as_slice(), &token_name, &at, &expires_at],
        )
        .await?;
    Ok(())
}

/// Ends a session (signing out); unknown hashes are ignored.
pub async fn delete_session(pool: &Pool, hash: &[u8; 32]) -> Result<(), Error> {
    pool.get()
        .await?
        .execute(
            "DELETE FROM api_sessions WHERE hash = $1",
            &[&hash.as_slice()],
        )
        .await?;
    Ok(())
}

/// Records when tokens were last used, many in one statement.
pub async fn record_use(pool: &Pool, uses: &[(String, DateTime<Utc>)]) -> Result<(), Error> {
    if uses.is_empty() {
        return Ok(());
    }
    let (names, ats): (Vec<&str>, Vec<DateTime<Utc>>) =
        uses.iter().map(|(n, at)| (n.as_str(), *at)).unzip();
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE api_tokens t SET last_used_at = greatest(t.last_used_at, u.at)
             FROM unnest($1::text[], $2::timestamptz[]) AS u(name, at)
             WHERE t.name = u.name",
            &[&names, &ats],
        )
        .await?;
    // Expired sessions are no use to anyone; clear them on the same beat.
    client
        .execute("DELETE FROM api_sessions WHERE expires_at <= now()", &[])
        .await?;
    Ok(())
}

/// Whether some active token holds the `admin` role.
pub async fn active_admin_exists(client: &impl GenericClient) -> Result<bool, Error> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM api_tokens
                            WHERE revoked_at IS NULL AND 'admin' = ANY (roles))",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Makes `hash` the value of the active `admin` token named `name`, creating
/// the row or replacing a revoked or different one; `true` if anything
/// changed.
pub async fn put_admin(
    client: &impl GenericClient,
    name: &str,
    hash: &[u8; 32],
    at: DateTime<Utc>,
) -> Result<bool, Error> {
    let changed = client
        .execute(
            "INSERT INTO api_tokens (name, hash, roles, created_at, created_by)
             VALUES ($1, $2, ARRAY['admin'], $3, 'system')
             ON CONFLICT (name) DO UPDATE
                SET hash = excluded.hash, roles = excluded.roles, created_at = excluded.created_at,
                    created_by = excluded.created_by, revoked_at = NULL, last_used_at = NULL
                WHERE api_tokens.hash <> excluded.hash OR api_tokens.revoked_at IS NOT NULL
                   OR NOT ('admin' = ANY (api_tokens.roles))",
            &[&name, &hash.as_slice(), &at],
        )
        .await?;
    if changed > 0 {
        // The old value's sessions must not outlive it.
        client
            .execute("DELETE FROM api_sessions WHERE token_name = $1", &[&name])
            .await?;
    }
    Ok(changed > 0)
}
