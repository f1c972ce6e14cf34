//! Tokens: `kapsel token create|list|revoke` (join tokens for `kapsel agent --token`, kubeadm
//! style) and `kapsel create token USER` (bearer tokens for users). Both are Secrets in
//! `kube-system` holding only the hash of the secret half (see kapsel-apiserver's `auth`), so
//! they are managed through the API like any object and revoking one deletes its Secret.

use std::io::Write;

use anyhow::{anyhow, bail, Context as _};
use clap::Subcommand;
use kapsel_api::client::{ApiResource, DynamicApi, ListParams, PostParams};
use kapsel_api::{DeleteOptions, Secret};
use kapsel_apiserver::auth::{self, JoinToken};
use serde_json::Value;

use super::Ctx;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token and print it (`kapsel agent --server URL --token TOKEN`).
    Create {
        /// How long the token is valid (e.g. 30m, 24h); 0: never expires.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// A note shown by `kapsel token list`.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List join tokens.
    #[command(alias = "ls")]
    List,
    /// Revoke join tokens by ID (the part before the dot).
    #[command(alias = "delete", alias = "rm")]
    Revoke {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

fn secrets(ctx: &Ctx) -> DynamicApi {
    ctx.client
        .dynamic(ApiResource::of::<Secret>(), Some(auth::TOKEN_NAMESPACE))
}

/// `--ttl` as an RFC 3339 expiration (`None`: never).
fn expiration(ttl: &str) -> anyhow::Result<Option<String>> {
    let d = if ttl.trim() == "0" {
        std::time::Duration::ZERO
    } else {
        super::parse_duration(ttl).with_context(|| format!("--ttl {ttl}"))?
    };
    if d.is_zero() {
        return Ok(None);
    }
    let d = chrono::Duration::from_std(d).map_err(|e| anyhow!("--ttl {ttl}: {e}"))?;
    Ok(Some(
        (chrono::Utc::now() + d).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    ))
}

/// The CA pin of the server this client talks to (`GET /cacerts`).
async fn ca_hash(ctx: &Ctx) -> anyhow::Result<String> {
    let pem = ctx.client.get_bytes("/cacerts").await?;
    let certs = kapsel_apiserver::tls::pem_certs(&pem)
        .map_err(|e| anyhow!("the server's /cacerts: {e}"))?;
    Ok(kapsel_apiserver::tls::ca_hash(&certs[0]))
}

/// `kapsel create token USER`.
pub async fn create_user_token(
    ctx: &Ctx,
    user: &str,
    groups: &[String],
    ttl: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if user.trim().is_empty() {
        bail!("a user name is required");
    }
    let token = auth::new_token();
    let obj = auth::token_secret(
        &token,
        Some((user, groups)),
        expiration(ttl)?.as_deref(),
        "",
    )
    .map_err(|e| anyhow!(e))?;
    secrets(ctx).create(&obj, &PostParams::default()).await?;
    writeln!(out, "{token}")?;
    Ok(())
}

fn field(obj: &Value, key: &str) -> String {
    auth::secret_field(obj, key).unwrap_or_default()
}

/// `kapsel token …`.
pub async fn run(ctx: &Ctx, cmd: TokenCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { ttl, description } => {
            let hash = ca_hash(ctx).await?;
            let token = auth::new_token();
            let obj = auth::token_secret(&token, None, expiration(&ttl)?.as_deref(), &description)
                .map_err(|e| anyhow!(e))?;
            secrets(ctx).create(&obj, &PostParams::default()).await?;
            writeln!(
                out,
                "{}",
                JoinToken {
                    ca_hash: hash,
                    token
                }
            )?;
        }
        TokenCommand::List => {
            let list = secrets(ctx).list(&ListParams::default()).await?;
            writeln!(out, "{:<8} {:<26} DESCRIPTION", "ID", "EXPIRES")?;
            for s in list.items {
                if s.get("type").and_then(Value::as_str) != Some(auth::JOIN_TOKEN_TYPE) {
                    continue;
                }
                let exp = field(&s, "expiration");
                writeln!(
                    out,
                    "{:<8} {:<26} {}",
                    field(&s, "token-id"),
                    if exp.is_empty() { "<never>" } else { &exp },
                    field(&s, "description")
                )?;
            }
        }
        TokenCommand::Revoke { ids } => {
            for id in ids {
                let id = id.split('.').next().unwrap_or_default().to_string();
                let name = format!("{}{id}", auth::JOIN_TOKEN_PREFIX);
                match secrets(ctx).delete(&name, &DeleteOptions::default()).await {
                    Ok(_) => writeln!(out, "join token {id} revoked")?,
                    Err(e) if e.is_not_found() => bail!("join token {id:?} not found"),
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}
