//! kapsel's gRPC component API, generated from `proto/kapsel/v1/component.proto`.
//!
//! Objects travel as the JSON bytes of the Kubernetes-shaped types of `kapsel-api`
//! ([`v1::Object`]); this crate holds only the generated code and tiny helpers.

#[allow(clippy::all, rust_2018_idioms, missing_docs)]
pub mod v1 {
    tonic::include_proto!("kapsel.v1");
}

pub use v1::node_agent_client::NodeAgentClient;
pub use v1::node_agent_server::{NodeAgent, NodeAgentServer};

impl v1::Object {
    /// An object of `kind` with its JSON encoding.
    pub fn new(kind: impl Into<String>, json: Vec<u8>) -> Self {
        v1::Object {
            kind: kind.into(),
            json,
        }
    }
}

impl v1::LogRequest {
    /// `tail_lines` as an option (negative means unset on the wire).
    pub fn tail(&self) -> Option<u64> {
        u64::try_from(self.tail_lines).ok()
    }
    pub fn since(&self) -> Option<u64> {
        u64::try_from(self.since_seconds).ok()
    }
    pub fn limit(&self) -> Option<u64> {
        u64::try_from(self.limit_bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::v1;
    use prost::Message;

    #[test]
    fn object_roundtrips_through_protobuf() {
        let o = v1::Object::new("Pod", br#"{"metadata":{"name":"a"}}"#.to_vec());
        let bytes = o.encode_to_vec();
        let back = v1::Object::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn log_request_unset_numbers() {
        let r = v1::LogRequest {
            tail_lines: -1,
            since_seconds: 5,
            limit_bytes: -1,
            ..Default::default()
        };
        assert_eq!(r.tail(), None);
        assert_eq!(r.since(), Some(5));
        assert_eq!(r.limit(), None);
    }
}
