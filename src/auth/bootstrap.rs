//! The first admin: when no active admin token exists, the server makes one
//! named `admin` and writes it to `{data dir}/admin-token` (mode 0600), so a
//! new user can sign in without any set-up; `AGENT_SERVER_ADMIN_TOKEN`
//! chooses the value instead (compose files, tests).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use deadpool_postgres::Pool;

use super::{credential_hash, new_token, store};
use crate::config::Secret;

/// The admin token's name.
pub const ADMIN_NAME: &str = "admin";
/// The file under the data dir that holds a token the server made.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// Any 64-bit number unique to this purpose: two instances starting at once
/// on an empty database make one admin token, not two.
const BOOTSTRAP_LOCK: i64 = 0x6167_656e_7461_646d;

/// What the start found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// `AGENT_SERVER_ADMIN_TOKEN` is the admin token.
    FromEnvironment,
    /// A new admin token was written to this file.
    Created(PathBuf),
    /// An active admin token existed; the file the server wrote earlier, if
    /// it is still there.
    Existing(Option<PathBuf>),
}

/// Makes sure an admin can sign in.
pub async fn ensure_admin(
    pool: &Pool,
    data_dir: &Path,
    from_environment: Option<&Secret>,
) -> anyhow::Result<Bootstrap> {
    let mut client = pool.get().await.context("connecting to PostgreSQL")?;
    if let Some(token) = from_environment {
        store::put_admin(
            &client,
            ADMIN_NAME,
            &credential_hash(token.expose()),
            crate::journal::now(),
        )
        .await
        .context("storing AGENT_SERVER_ADMIN_TOKEN")?;
        return Ok(Bootstrap::FromEnvironment);
    }
    let file = data_dir.join(ADMIN_TOKEN_FILE);
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BOOTSTRAP_LOCK])
        .await?;
    if store::active_admin_exists(&tx).await? {
        return Ok(Bootstrap::Existing(file.exists().then_some(file)));
    }
    // The file is written before the token is committed, so a token never
    // exists that nobody can read.
    let token = new_token();
    let partial = data_dir.join(format!("{ADMIN_TOKEN_FILE}.partial"));
    write_private(&partial, token.expose())
        .with_context(|| format!("writing {}", partial.display()))?;
    let stored = async {
        store::put_admin(
            &tx,
            ADMIN_NAME,
            &credential_hash(token.expose()),
            crate::journal::now(),
        )
        .await?;
        tx.commit().await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(error) = stored {
        let _ = std::fs::remove_file(&partial);
        return Err(error.context("storing the admin token"));
    }
    std::fs::rename(&partial, &file).with_context(|| format!("writing {}", file.display()))?;
    Ok(Bootstrap::Created(file))
}

/// Writes `text` to a new file only its owner may read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Reads a token from a file the server wrote (for the command-line client).
pub fn read_token_file(path: &Path) -> std::io::Result<Secret> {
    Ok(Secret::new(
        std::fs::read_to_string(path)?.trim().to_string(),
    ))
}
