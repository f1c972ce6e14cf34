//! Error messages the way kubectl prints them.

use kapsel_api::client::ClientError;

/// A server error in the context of an operation on a file (`error when creating "x.yaml"`).
#[derive(Debug, thiserror::Error)]
#[error("error when {verb} \"{source_name}\": {err}")]
pub struct OpError {
    pub verb: &'static str,
    pub source_name: String,
    #[source]
    pub err: ClientError,
}

/// Already printed; only the exit code is left.
#[derive(Debug, thiserror::Error)]
#[error("{0} error(s) occurred")]
pub struct Reported(pub usize);

/// The text of one client error, with an optional context prefix for the message.
pub fn format_client_error(e: &ClientError, context: Option<&str>) -> String {
    let ctx = context.map(|c| format!("{c}: ")).unwrap_or_default();
    match e {
        ClientError::Api(s) => {
            if s.reason().is_empty() {
                format!("Error from server: {ctx}{}", s.message())
            } else {
                format!("Error from server ({}): {ctx}{}", s.reason(), s.message())
            }
        }
        ClientError::Http(h) if h.is_connect() => {
            let host = h
                .url()
                .map(|u| {
                    format!(
                        "{}:{}",
                        u.host_str().unwrap_or(""),
                        u.port_or_known_default().unwrap_or(0)
                    )
                })
                .unwrap_or_else(|| "server".into());
            format!("The connection to the server {host} was refused - did you specify the right host or port?")
        }
        ClientError::Http(h) if h.is_timeout() => {
            format!("error: {ctx}the server did not answer in time ({h})")
        }
        other => format!("error: {ctx}{other}"),
    }
}

/// The full message for any error reaching `main`.
pub fn format_error(err: &anyhow::Error) -> String {
    if let Some(op) = err.downcast_ref::<OpError>() {
        return format_client_error(
            &op.err,
            Some(&format!("error when {} \"{}\"", op.verb, op.source_name)),
        );
    }
    if let Some(ce) = err.downcast_ref::<ClientError>() {
        return format_client_error(ce, None);
    }
    // An anyhow chain whose root is a client error: keep the outer context.
    for cause in err.chain().skip(1) {
        if let Some(ce) = cause.downcast_ref::<ClientError>() {
            return format_client_error(ce, Some(&err.to_string()));
        }
    }
    let msg = format!("{err:#}");
    if msg.starts_with("error:") {
        msg
    } else {
        format!("error: {msg}")
    }
}

/// True when the error is a closed stdout (`kapsel get … | head`): exit quietly.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::Status;

    #[test]
    fn kubectl_shapes() {
        let nf = ClientError::from(Status::failure(
            404,
            "NotFound",
            "deployments.apps \"web\" not found",
        ));
        assert_eq!(
            format_error(&anyhow::Error::new(nf)),
            "Error from server (NotFound): deployments.apps \"web\" not found"
        );
        let ae = ClientError::from(Status::failure(
            409,
            "AlreadyExists",
            "deployments.apps \"nginx\" already exists",
        ));
        let op = OpError {
            verb: "creating",
            source_name: "deployment.yaml".into(),
            err: ae,
        };
        assert_eq!(
            format_error(&anyhow::Error::new(op)),
            "Error from server (AlreadyExists): error when creating \"deployment.yaml\": deployments.apps \"nginx\" already exists"
        );
        assert_eq!(
            format_error(&anyhow::anyhow!("unable to read file \"x\"")),
            "error: unable to read file \"x\""
        );
    }
}
