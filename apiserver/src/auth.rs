//! Authentication: who a request comes from, as a [`UserInfo`] request extension that the
//! authorizer and the handlers read.
//!
//! [`ClusterAuthenticator`] (the secure server) accepts, in this order:
//! - a client certificate signed by the cluster CA (verified by rustls during the handshake;
//!   the accept loop puts it in the request as [`PeerCertificate`]): CN = user, O = groups;
//! - `Authorization: Bearer TOKEN` with the admin token, a token of `--token-auth-file`
//!   (Kubernetes' CSV format), a user token (`kapsel create token`) or a join token
//!   (`kapsel token create`, user `system:bootstrap:ID`, group `system:bootstrappers`).
//!
//! User and join tokens are `ID.SECRET` (6 + 16 characters of `[a-z0-9]`, kubeadm's format)
//! and live as Secrets in `kube-system` (`kapsel-token-ID`, `bootstrap-token-ID`) holding only
//! the SHA-256 of the secret half, so revoking one is deleting its Secret.
//!
//! Without credentials only [`PUBLIC_PATHS`] are served (as `system:anonymous`); anything
//! else, and any bad or expired credential, is `401 Unauthorized`.
//!
//! [`AllowAll`] is the old insecure port: everyone is `system:admin` in `system:masters`
//! (the in-process test server, `--insecure-http` on loopback).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::request::Parts;
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::errors::ApiError;
use crate::rest::Api;

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

/// Members are cluster admins (the RBAC default binding).
pub const GROUP_MASTERS: &str = "system:masters";
/// Every authenticated user.
pub const GROUP_AUTHENTICATED: &str = "system:authenticated";
/// Node agents (client certificates issued at join).
pub const GROUP_NODES: &str = "system:nodes";
/// Join tokens.
pub const GROUP_BOOTSTRAPPERS: &str = "system:bootstrappers";
/// Paths served without credentials.
pub const PUBLIC_PATHS: [&str; 5] = ["/healthz", "/readyz", "/livez", "/version", "/cacerts"];
/// Where tokens live.
pub const TOKEN_NAMESPACE: &str = "kube-system";
/// Secret name prefix of join tokens (Kubernetes' bootstrap tokens).
pub const JOIN_TOKEN_PREFIX: &str = "bootstrap-token-";
/// Secret name prefix of user tokens.
pub const USER_TOKEN_PREFIX: &str = "kapsel-token-";
/// Secret type of join tokens.
pub const JOIN_TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Secret type of user tokens.
pub const USER_TOKEN_TYPE: &str = "kapsel.dev/user-token";

impl UserInfo {
    pub fn anonymous() -> Self {
        UserInfo {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    /// The cluster administrator of the insecure port and the admin token.
    pub fn admin() -> Self {
        UserInfo {
            name: "system:admin".into(),
            groups: vec![GROUP_MASTERS.into(), GROUP_AUTHENTICATED.into()],
        }
    }

    /// `name` in `groups`, plus `system:authenticated`.
    pub fn authenticated(name: impl Into<String>, groups: Vec<String>) -> Self {
        let mut groups = groups;
        if !groups.iter().any(|g| g == GROUP_AUTHENTICATED) {
            groups.push(GROUP_AUTHENTICATED.into());
        }
        UserInfo {
            name: name.into(),
            groups,
        }
    }

    pub fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }

    /// The node name of a node identity (`system:node:NAME` in `system:nodes`).
    pub fn node_name(&self) -> Option<&str> {
        self.name
            .strip_prefix("system:node:")
            .filter(|n| !n.is_empty() && self.in_group(GROUP_NODES))
    }
}

/// Decides who a request comes from. `Err` answers the request (401) without running it.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate(&self, parts: &Parts) -> Result<UserInfo, ApiError>;
}

/// Admits everyone as `system:admin` in `system:masters`: the old insecure port (the
/// in-process test server, `--insecure-http` on loopback).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, _parts: &Parts) -> Result<UserInfo, ApiError> {
        Ok(UserInfo::admin())
    }
}

/// The client certificate the connection presented (DER), verified against the cluster CA by
/// the TLS handshake. Put into every request of the connection by the accept loop.
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Arc<Vec<u8>>);

/// Run the configured [`Authenticator`]: the request with the caller in its extensions, or
/// why not (answered as a 401).
pub fn authenticate(auth: &dyn Authenticator, req: Request) -> Result<Request, ApiError> {
    let (mut parts, body) = req.into_parts();
    let user = auth.authenticate(&parts)?;
    parts.extensions.insert(user);
    Ok(Request::from_parts(parts, body))
}

// ---------------------------------------------------------------------------------------------
// Tokens: pure helpers shared with the CLI

/// `sha256:<hex>` of a token or token secret.
pub fn token_hash(secret: &str) -> String {
    format!(
        "sha256:{}",
        crate::tls::hex(&Sha256::digest(secret.as_bytes()))
    )
}

/// Splits `ID.SECRET` (6 and 16 characters of `[a-z0-9]`).
pub fn split_token(t: &str) -> Option<(&str, &str)> {
    let (id, secret) = t.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// A new `ID.SECRET` token.
pub fn new_token() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
            .collect()
    };
    let id = pick(6);
    format!("{id}.{}", pick(16))
}

/// A join token as agents get it: `K10<ca hash hex>::ID.SECRET` (k3s' format), pinning the
/// cluster CA as `kubeadm join --discovery-token-ca-cert-hash` does.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// `sha256:<hex>`.
    pub ca_hash: String,
    /// `ID.SECRET`.
    pub token: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .finish_non_exhaustive()
    }
}

impl JoinToken {
    /// Parse `K10<hex>::ID.SECRET`.
    pub fn parse(s: &str) -> Result<JoinToken, String> {
        let s = s.trim();
        let rest = s
            .strip_prefix("K10")
            .ok_or("a join token looks like K10<CA hash>::<id>.<secret>")?;
        let (hash, token) = rest
            .split_once("::")
            .ok_or("a join token looks like K10<CA hash>::<id>.<secret>")?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the CA hash of a join token is 64 hex digits".into());
        }
        if split_token(token).is_none() {
            return Err("the token of a join token is <6 chars>.<16 chars> of [a-z0-9]".into());
        }
        Ok(JoinToken {
            ca_hash: format!("sha256:{}", hash.to_lowercase()),
            token: token.into(),
        })
    }

    pub fn id(&self) -> &str {
        self.token.split('.').next().unwrap_or_default()
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = self
            .ca_hash
            .strip_prefix("sha256:")
            .unwrap_or(&self.ca_hash);
        write!(f, "K10{hex}::{}", self.token)
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The Secret that stores a token (`ID.SECRET`): only the hash of the secret half.
/// `user` is `None` for a join token. `expiration` is RFC 3339.
pub fn token_secret(
    token: &str,
    user: Option<(&str, &[String])>,
    expiration: Option<&str>,
    description: &str,
) -> Result<Value, String> {
    let (id, secret) = split_token(token).ok_or("malformed token")?;
    let mut data = serde_json::Map::new();
    data.insert("token-id".into(), b64(id).into());
    data.insert("token-secret-hash".into(), b64(&token_hash(secret)).into());
    if let Some(e) = expiration {
        data.insert("expiration".into(), b64(e).into());
    }
    if !description.is_empty() {
        data.insert("description".into(), b64(description).into());
    }
    let (name, ty) = match user {
        Some((u, groups)) => {
            data.insert("user".into(), b64(u).into());
            data.insert("groups".into(), b64(&groups.join(",")).into());
            (format!("{USER_TOKEN_PREFIX}{id}"), USER_TOKEN_TYPE)
        }
        None => {
            data.insert("usage-bootstrap-authentication".into(), b64("true").into());
            (format!("{JOIN_TOKEN_PREFIX}{id}"), JOIN_TOKEN_TYPE)
        }
    };
    Ok(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": TOKEN_NAMESPACE},
        "type": ty,
        "data": data,
    }))
}

/// A field of a token Secret (`data` is base64; `stringData` is accepted too).
pub fn secret_field(obj: &Value, key: &str) -> Option<String> {
    if let Some(s) = obj.pointer(&format!("/data/{key}")).and_then(Value::as_str) {
        let b = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
        return String::from_utf8(b).ok();
    }
    obj.pointer(&format!("/stringData/{key}"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Why a token Secret does not admit a token.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenReject {
    WrongSecret,
    Expired,
    Malformed,
    NotForAuthentication,
}

/// Check `secret` against a token Secret at time `now` (seconds since the epoch); on success
/// the user it authenticates. Pure: the table tests below cover it.
pub fn check_token(obj: &Value, secret: &str, now: i64) -> Result<UserInfo, TokenReject> {
    let want = secret_field(obj, "token-secret-hash").ok_or(TokenReject::Malformed)?;
    let id = secret_field(obj, "token-id").ok_or(TokenReject::Malformed)?;
    if want != token_hash(secret) {
        return Err(TokenReject::WrongSecret);
    }
    if let Some(e) = secret_field(obj, "expiration") {
        let t = chrono::DateTime::parse_from_rfc3339(&e).map_err(|_| TokenReject::Malformed)?;
        if t.timestamp() <= now {
            return Err(TokenReject::Expired);
        }
    }
    match obj.get("type").and_then(Value::as_str) {
        Some(JOIN_TOKEN_TYPE) => {
            if secret_field(obj, "usage-bootstrap-authentication").as_deref() != Some("true") {
                return Err(TokenReject::NotForAuthentication);
            }
            Ok(UserInfo::authenticated(
                format!("system:bootstrap:{id}"),
                vec![GROUP_BOOTSTRAPPERS.into()],
            ))
        }
        Some(USER_TOKEN_TYPE) => {
            let user = secret_field(obj, "user")
                .filter(|u| !u.is_empty())
                .ok_or(TokenReject::Malformed)?;
            let groups = secret_field(obj, "groups")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect();
            Ok(UserInfo::authenticated(user, groups))
        }
        _ => Err(TokenReject::Malformed),
    }
}

/// Parse a static token file (Kubernetes' `--token-auth-file`): `token,user,uid[,"g1,g2"]` per
/// line; blank lines and `#` comments are skipped. Errors name the line.
pub fn parse_token_csv(text: &str) -> Result<Vec<(String, UserInfo)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split_csv(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if fields.len() < 3 {
            return Err(format!(
                "line {}: want token,user,uid[,\"group1,group2\"]",
                i + 1
            ));
        }
        let (token, user) = (fields[0].trim(), fields[1].trim());
        if token.is_empty() || user.is_empty() {
            return Err(format!("line {}: empty token or user", i + 1));
        }
        let groups = fields
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        out.push((token.to_string(), UserInfo::authenticated(user, groups)));
    }
    Ok(out)
}

/// One CSV line with `"…"` quoting (`""` is a quote).
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.trim().is_empty() => {
                cur.clear();
                quoted = true
            }
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    out.push(cur);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The secure server's authenticator

/// Client certificates, static tokens, and the token Secrets of the store.
pub struct ClusterAuthenticator {
    /// Token hash → user (admin token, token file, the server's own loopback token).
    static_tokens: HashMap<String, UserInfo>,
    api: Arc<Api>,
}

impl ClusterAuthenticator {
    pub fn new(api: Arc<Api>) -> Self {
        ClusterAuthenticator {
            static_tokens: HashMap::new(),
            api,
        }
    }

    /// Admit `token` as `user`.
    pub fn add_token(&mut self, token: &str, user: UserInfo) {
        self.static_tokens.insert(token_hash(token), user);
    }

    fn lookup_token(&self, token: &str) -> Result<UserInfo, ApiError> {
        if let Some(u) = self.static_tokens.get(&token_hash(token)) {
            return Ok(u.clone());
        }
        let (id, secret) = split_token(token).ok_or(ApiError::Unauthorized)?;
        let def = crate::registry::find("", "v1", "secrets")
            .ok_or_else(|| ApiError::Internal("secrets are not served".into()))?;
        let now = chrono::Utc::now().timestamp();
        for prefix in [USER_TOKEN_PREFIX, JOIN_TOKEN_PREFIX] {
            let obj = match self
                .api
                .get_object(def, TOKEN_NAMESPACE, &format!("{prefix}{id}"))
            {
                Ok((v, _)) => v,
                Err(ApiError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            return check_token(&obj, secret, now).map_err(|why| {
                tracing::debug!(token_id = id, ?why, "token refused");
                ApiError::Unauthorized
            });
        }
        Err(ApiError::Unauthorized)
    }
}

/// The user of a verified client certificate, refused once it has expired (a connection
/// outlives the handshake that checked it).
pub fn cert_user(der: &[u8], now: i64) -> Result<UserInfo, ApiError> {
    let id = crate::tls::cert_identity(der).map_err(|_| ApiError::Unauthorized)?;
    if id.user.is_empty() || now >= id.not_after || now < id.not_before {
        return Err(ApiError::Unauthorized);
    }
    Ok(UserInfo::authenticated(id.user, id.groups))
}

impl Authenticator for ClusterAuthenticator {
    fn authenticate(&self, parts: &Parts) -> Result<UserInfo, ApiError> {
        if let Some(auth) = parts.headers.get(axum::http::header::AUTHORIZATION) {
            let token = auth
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or(ApiError::Unauthorized)?;
            return self.lookup_token(token);
        }
        if let Some(PeerCertificate(der)) = parts.extensions.get::<PeerCertificate>() {
            return cert_user(der, chrono::Utc::now().timestamp());
        }
        if PUBLIC_PATHS.contains(&parts.uri.path()) {
            return Ok(UserInfo::anonymous());
        }
        Err(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_csv_lines() {
        let ok = parse_token_csv(
            "# comment\n\nt1,alice,1\nt2,bob,2,\"dev,ops\"\n  t3 , carol , 3 , \"a\"\n",
        )
        .unwrap();
        let got: Vec<(&str, &str, Vec<&str>)> = ok
            .iter()
            .map(|(t, u)| {
                (
                    t.as_str(),
                    u.name.as_str(),
                    u.groups.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("t1", "alice", vec![GROUP_AUTHENTICATED]),
                ("t2", "bob", vec!["dev", "ops", GROUP_AUTHENTICATED]),
                ("t3", "carol", vec!["a", GROUP_AUTHENTICATED]),
            ]
        );
        for (bad, line) in [
            ("t1,alice", 1),
            ("ok,u,1\n,alice,1", 2),
            ("t,u,1,\"g1,g2", 1),
        ] {
            let e = parse_token_csv(bad).unwrap_err();
            assert!(e.starts_with(&format!("line {line}:")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn token_shapes() {
        for (t, ok) in [
            ("abcdef.0123456789abcdef", true),
            ("abcdef.0123456789abcde", false),
            ("ABCDEF.0123456789abcdef", false),
            ("abcdef0123456789abcdef", false),
            ("abc.def", false),
        ] {
            assert_eq!(split_token(t).is_some(), ok, "{t}");
        }
        let t = new_token();
        assert!(split_token(&t).is_some(), "{t}");
        assert_ne!(t, new_token());
        let hash = format!("sha256:{}", "ab".repeat(32));
        let j = JoinToken {
            ca_hash: hash.clone(),
            token: t.clone(),
        };
        let s = j.to_string();
        assert!(s.starts_with("K10abab"), "{s}");
        assert_eq!(JoinToken::parse(&s).unwrap(), j);
        for bad in [
            t.as_str(),
            "K10abcd::abcdef.0123456789abcdef",
            &format!("K10{}::nope", "ab".repeat(32)),
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_secrets_admit_only_the_right_unexpired_secret() {
        let groups = vec!["dev".to_string()];
        let now = 1_000_000;
        let future = chrono::DateTime::from_timestamp(now + 60, 0)
            .unwrap()
            .to_rfc3339();
        let past = chrono::DateTime::from_timestamp(now - 1, 0)
            .unwrap()
            .to_rfc3339();
        let tok = "abcdef.0123456789abcdef";
        let user = token_secret(tok, Some(("alice", &groups)), Some(&future), "").unwrap();
        let join = token_secret(tok, None, None, "node join").unwrap();
        let expired = token_secret(tok, None, Some(&past), "").unwrap();
        let mut no_usage = join.clone();
        no_usage["data"]
            .as_object_mut()
            .unwrap()
            .remove("usage-bootstrap-authentication");
        assert_eq!(
            user.pointer("/metadata/name").unwrap(),
            "kapsel-token-abcdef"
        );
        assert!(!user.to_string().contains("0123456789abcdef"));
        type Expect<'a> = Result<(&'a str, Vec<&'a str>), TokenReject>;
        let cases: Vec<(&Value, &str, Expect<'_>)> = vec![
            (
                &user,
                "0123456789abcdef",
                Ok(("alice", vec!["dev", GROUP_AUTHENTICATED])),
            ),
            (&user, "0123456789abcdee", Err(TokenReject::WrongSecret)),
            (
                &join,
                "0123456789abcdef",
                Ok((
                    "system:bootstrap:abcdef",
                    vec![GROUP_BOOTSTRAPPERS, GROUP_AUTHENTICATED],
                )),
            ),
            (&expired, "0123456789abcdef", Err(TokenReject::Expired)),
            (
                &no_usage,
                "0123456789abcdef",
                Err(TokenReject::NotForAuthentication),
            ),
            (
                &Value::Null,
                "0123456789abcdef",
                Err(TokenReject::Malformed),
            ),
        ];
        for (obj, secret, want) in cases {
            let got = check_token(obj, secret, now);
            match (got, want) {
                (Ok(u), Ok((name, groups))) => {
                    assert_eq!(u.name, name);
                    assert_eq!(u.groups, groups);
                }
                (Err(a), Err(b)) => assert_eq!(a, b),
                (a, b) => panic!("{obj}: got {a:?}, want {b:?}"),
            }
        }
    }

    #[test]
    fn node_identity() {
        let n = UserInfo::authenticated("system:node:n1", vec![GROUP_NODES.into()]);
        assert_eq!(n.node_name(), Some("n1"));
        let not = UserInfo::authenticated("system:node:n1", vec![]);
        assert_eq!(not.node_name(), None);
        assert!(UserInfo::admin().in_group(GROUP_MASTERS));
    }
}
