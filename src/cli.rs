//! The command line besides `serve`: `agent-server token create | list |
//! revoke` (contract section 9), working directly on the database: the
//! `DATABASE_URL`, or the data dir's embedded cluster, also while a server
//! runs on it (a cluster this command had to start is stopped again).

use anyhow::{Context, bail};

use crate::auth::{self, store};
use crate::config::Settings;
use crate::startup::{EMBEDDED_DATABASE, open_database};

/// The usage of `agent-server token`.
pub const TOKEN_USAGE: &str = "usage: agent-server token create --name NAME --role ROLE[,ROLE...]\n       agent-server token list\n       agent-server token revoke NAME";

/// Who the journal and the token list name as the creator of tokens made
/// here: someone with access to the database itself.
const CLI_AUTHOR: &str = "cli";

/// A parsed `token` command.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenCommand {
    Create {
        name: String,
        roles: Vec<auth::Role>,
    },
    List,
    Revoke {
        name: String,
    },
}

/// Parses the words after `token`.
pub fn parse_token_command(args: &[String]) -> Result<TokenCommand, String> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["list"] => Ok(TokenCommand::List),
        ["revoke", name] => Ok(TokenCommand::Revoke {
            name: name.to_string(),
        }),
        ["create", rest @ ..] => {
            let mut name = None;
            let mut roles = Vec::new();
            let mut rest = rest.iter();
            while let Some(word) = rest.next() {
                let (flag, inline) = match word.split_once('=') {
                    Some((flag, value)) => (flag, Some(value)),
                    None => (*word, None),
                };
                let mut value = || {
                    inline
                        .or_else(|| rest.next().copied())
                        .ok_or_else(|| format!("{flag} needs a value"))
                };
                match flag {
                    "--name" => name = Some(value()?.to_string()),
                    "--role" | "--roles" => roles.extend(value()?.split(',').map(str::to_string)),
                    other => return Err(format!("unknown option `{other}`")),
                }
            }
            let name = name.ok_or("--name is required")?;
            if !auth::valid_token_name(&name) {
                return Err("--name must be 1 to 64 characters of a-z, 0-9, `_` and `-`".into());
            }
            let roles = auth::parse_roles(roles.iter().map(String::as_str))?;
            Ok(TokenCommand::Create { name, roles })
        }
        _ => Err("unknown token command".into()),
    }
}

/// Runs a `token` command; what it prints on stdout is its answer (for
/// `create`, the new token alone, for scripts).
pub async fn token(settings: &Settings, command: TokenCommand) -> anyhow::Result<()> {
    let database = open_database(settings, EMBEDDED_DATABASE).await?;
    let outcome = run_token_command(&database.pool, command).await;
    database.pool.close();
    if let Some(cluster) = &database.embedded
        && !cluster.was_running()
    {
        cluster.stop().await?;
    }
    outcome
}

async fn run_token_command(
    pool: &deadpool_postgres::Pool,
    command: TokenCommand,
) -> anyhow::Result<()> {
    let client = pool.get().await.context("connecting to PostgreSQL")?;
    match command {
        TokenCommand::Create { name, roles } => {
            let token = auth::new_token();
            store::create_token(
                &client,
                &name,
                &auth::credential_hash(token.expose()),
                &roles,
                CLI_AUTHOR,
                crate::journal::now(),
            )
            .await?;
            println!("{}", token.expose());
        }
        TokenCommand::List => {
            let tokens = store::list_tokens(&client).await?;
            println!(
                "{:<24} {:<32} {:<20} {:<12} {:<20} REVOKED",
                "NAME", "ROLES", "CREATED", "BY", "LAST USED"
            );
            let time = |at: Option<chrono::DateTime<chrono::Utc>>| {
                at.map_or("-".to_string(), |at| {
                    at.format("%Y-%m-%d %H:%M:%S").to_string()
                })
            };
            for t in tokens {
                let roles: Vec<&str> = t.roles.iter().map(|r| r.as_str()).collect();
                println!(
                    "{:<24} {:<32} {:<20} {:<12} {:<20} {}",
                    t.name,
                    roles.join(","),
                    time(Some(t.created_at)),
                    t.created_by,
                    time(t.last_used_at),
                    time(t.revoked_at),
                );
            }
        }
        TokenCommand::Revoke { name } => {
            if !store::revoke_token(pool, &name, crate::journal::now()).await? {
                bail!("no token named `{name}`");
            }
            println!("revoked {name}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn token_commands_parse() {
        assert_eq!(
            parse_token_command(&words("create --name ci --role viewer,operator")),
            Ok(TokenCommand::Create {
                name: "ci".into(),
                roles: vec![Role::Viewer, Role::Operator]
            })
        );
        assert_eq!(
            parse_token_command(&words("create --role=approver --name=bob --role viewer")),
            Ok(TokenCommand::Create {
                name: "bob".into(),
                roles: vec![Role::Viewer, Role::Approver]
            })
        );
        assert_eq!(parse_token_command(&words("list")), Ok(TokenCommand::List));
        assert_eq!(
            parse_token_command(&words("revoke ci")),
            Ok(TokenCommand::Revoke { name: "ci".into() })
        );
        for bad in [
            "create --role viewer",
            "create --name ci",
            "create --name Ci --role viewer",
            "create --name ci --role god",
            "create --name ci --role",
            "create --name ci --role viewer --force",
            "revoke",
            "rotate ci",
            "",
        ] {
            assert!(parse_token_command(&words(bad)).is_err(), "{bad}");
        }
    }
}
