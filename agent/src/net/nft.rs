//! Programming nftables through `nft -f -` (one transaction per call), behind [`Nft`] so the
//! service proxy is tested without root and the root tests can point it at a network namespace.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{AgentError, Result};

/// The privileged side of the service proxy.
pub trait Nft: Send + Sync + 'static {
    /// Apply `script` as one atomic nftables transaction.
    fn apply(&self, script: &str) -> Result<()>;
    /// Delete the table `family name` if it exists.
    fn delete_table(&self, family: &str, name: &str) -> Result<()>;
}

/// The `nft` command, optionally run inside a named network namespace (`ip netns exec`).
#[derive(Clone, Debug, Default)]
pub struct NftCli {
    pub netns: Option<String>,
}

impl NftCli {
    fn command(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]);
                c
            }
            None => Command::new("nft"),
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let io = |e: std::io::Error| AgentError::Io {
            context: "run nft".into(),
            source: e,
        };
        let mut child = self
            .command()
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io)?;
        if let (Some(s), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(s.as_bytes()).map_err(io)?;
        }
        let out = child.wait_with_output().map_err(io)?;
        if !out.status.success() {
            return Err(AgentError::Io {
                context: format!("nft {}", args.join(" ")),
                source: std::io::Error::other(
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `nft list table FAMILY NAME` (for tests and debugging).
    pub fn list_table(&self, family: &str, name: &str) -> Result<String> {
        self.run(&["list", "table", family, name], None)
    }
}

impl Nft for NftCli {
    fn apply(&self, script: &str) -> Result<()> {
        self.run(&["-f", "-"], Some(script)).map(|_| ())
    }

    fn delete_table(&self, family: &str, name: &str) -> Result<()> {
        // Creating it first makes the delete succeed whether or not it existed, atomically.
        self.apply(&format!(
            "table {family} {name}\ndelete table {family} {name}\n"
        ))
    }
}
