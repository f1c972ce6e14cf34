//! The kinds kapsel knows: kind, group/version, plural, singular, short names and scope, and the
//! resolution of what users type (`po`, `deploy`, `deployments.apps`, `deploy/web`).

use kapsel_api::client::ApiResource;
use kapsel_api::Resource;

/// One resource type as the CLI sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    pub kind: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
}

impl ResourceInfo {
    fn of<K: Resource>() -> Self {
        ResourceInfo {
            kind: K::KIND,
            group: K::GROUP,
            version: K::VERSION,
            plural: K::PLURAL,
            singular: K::SINGULAR,
            short_names: K::SHORT_NAMES,
            namespaced: K::NAMESPACED,
        }
    }
    pub fn api_resource(&self) -> ApiResource {
        ApiResource::new(
            self.group,
            self.version,
            self.kind,
            self.plural,
            self.namespaced,
        )
    }
    /// `apps/v1` or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// `deployments.apps`, `pods`: the name in server errors.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// `deployment.apps`, `pod`: the prefix of `-o name` and of `created`/`configured` lines.
    pub fn type_name(&self) -> String {
        if self.group.is_empty() {
            self.singular.to_string()
        } else {
            format!("{}.{}", self.singular, self.group)
        }
    }
}

/// All kinds, in the order of `kapsel api-resources`.
pub fn all() -> Vec<ResourceInfo> {
    use kapsel_api::*;
    let mut v = vec![
        ResourceInfo::of::<ConfigMap>(),
        ResourceInfo::of::<Endpoints>(),
        ResourceInfo::of::<Event>(),
        ResourceInfo::of::<LimitRange>(),
        ResourceInfo::of::<Namespace>(),
        ResourceInfo::of::<Node>(),
        ResourceInfo::of::<Pod>(),
        ResourceInfo::of::<ResourceQuota>(),
        ResourceInfo::of::<Secret>(),
        ResourceInfo::of::<Service>(),
        ResourceInfo::of::<Deployment>(),
        ResourceInfo::of::<ReplicaSet>(),
        ResourceInfo::of::<Lease>(),
        ResourceInfo::of::<ImageProfile>(),
    ];
    v.sort_by_key(|r| (r.group, r.plural));
    v
}

/// The kinds `get all` shows, in kubectl's order.
pub fn all_category() -> Vec<ResourceInfo> {
    ["pods", "services", "deployments", "replicasets"]
        .iter()
        .filter_map(|p| lookup(p))
        .collect()
}

/// Resolve `po`, `pod`, `pods`, `Pod`, `deployments.apps`, `deployment.apps/v1` …
pub fn lookup(name: &str) -> Option<ResourceInfo> {
    let lower = name.to_ascii_lowercase();
    let (base, group) = match lower.split_once('.') {
        Some((b, g)) => (b.to_string(), Some(g.to_string())),
        None => (lower.clone(), None),
    };
    all().into_iter().find(|r| {
        let name_matches = r.plural == base
            || r.singular == base
            || r.kind.eq_ignore_ascii_case(&base)
            || r.short_names.contains(&base.as_str());
        let group_matches = match &group {
            None => true,
            // `deployments.apps` or `deployments.v1.apps`.
            Some(g) => {
                g == r.group
                    || *g == format!("{}.{}", r.version, r.group)
                    || (r.group.is_empty() && (g == "v1" || g.is_empty()))
            }
        };
        name_matches && group_matches
    })
}

/// Resolve the `apiVersion`/`kind` of a manifest.
pub fn lookup_kind(api_version: &str, kind: &str) -> Option<ResourceInfo> {
    all()
        .into_iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

/// The error for an unknown type, with a suggestion when one is close.
pub fn unknown_type_error(name: &str) -> anyhow::Error {
    let mut msg = format!("the server doesn't have a resource type \"{name}\"");
    if let Some(s) = suggest(name) {
        msg.push_str(&format!("\n\nDid you mean \"{s}\"?"));
    }
    anyhow::anyhow!(msg)
}

fn suggest(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let mut best: Option<(usize, String)> = None;
    for r in all() {
        let mut candidates = vec![r.plural.to_string(), r.singular.to_string()];
        candidates.extend(r.short_names.iter().map(|s| s.to_string()));
        for c in candidates {
            let d = levenshtein(&lower, &c);
            if d <= 2.max(c.len() / 3) && best.as_ref().is_none_or(|(bd, _)| d < *bd) {
                best = Some((d, r.plural.to_string()));
            }
        }
    }
    best.map(|(_, s)| s)
}

/// Edit distance, for suggestions.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parse `deploy/web` into the type and the name.
pub fn split_type_name(s: &str) -> Option<(ResourceInfo, String)> {
    let (t, n) = s.split_once('/')?;
    if n.is_empty() || n.contains('/') {
        return None;
    }
    lookup(t).map(|r| (r, n.to_string()))
}

/// What `get`/`delete`/`describe` were asked for: types and names, from either
/// `KIND[,KIND] [NAME…]` or `KIND/NAME…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Each type with the names asked for (empty: all of them).
    pub groups: Vec<(ResourceInfo, Vec<String>)>,
}

pub fn parse_selection(args: &[String]) -> anyhow::Result<Selection> {
    if args.is_empty() {
        anyhow::bail!(
            "you must specify the type of resource to get. Use \"kapsel api-resources\" for a complete list of supported resources."
        );
    }
    let mut groups: Vec<(ResourceInfo, Vec<String>)> = Vec::new();
    if args[0].contains('/') {
        for a in args {
            let Some((t, _)) = a.split_once('/') else {
                anyhow::bail!("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'kapsel get resource/<resource_name>' instead of 'kapsel get resource resource/<resource_name>'");
            };
            let Some((r, n)) = split_type_name(a) else {
                return Err(unknown_type_error(t));
            };
            match groups.iter_mut().find(|(g, _)| g.plural == r.plural) {
                Some((_, names)) => names.push(n),
                None => groups.push((r, vec![n])),
            }
        }
        return Ok(Selection { groups });
    }
    let names: Vec<String> = args[1..].to_vec();
    if names.iter().any(|n| n.contains('/')) {
        anyhow::bail!("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'kapsel get resource/<resource_name>' instead of 'kapsel get resource resource/<resource_name>'");
    }
    let types: Vec<&str> = args[0].split(',').filter(|s| !s.is_empty()).collect();
    for t in types {
        let infos = if t.eq_ignore_ascii_case("all") {
            all_category()
        } else {
            vec![lookup(t).ok_or_else(|| unknown_type_error(t))?]
        };
        for r in infos {
            if !groups.iter().any(|(g, _)| g.plural == r.plural) {
                groups.push((r, names.clone()));
            }
        }
    }
    Ok(Selection { groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_and_aliases() {
        for (input, plural) in [
            ("po", "pods"),
            ("pod", "pods"),
            ("Pods", "pods"),
            ("deploy", "deployments"),
            ("deployments.apps", "deployments"),
            ("deployment.v1.apps", "deployments"),
            ("rs", "replicasets"),
            ("svc", "services"),
            ("ns", "namespaces"),
            ("no", "nodes"),
            ("cm", "configmaps"),
            ("ev", "events"),
            ("quota", "resourcequotas"),
            ("limits", "limitranges"),
            ("ep", "endpoints"),
            ("secret", "secrets"),
            ("leases", "leases"),
            ("imageprofile", "imageprofiles"),
            ("imageprofiles.kapsel.dev", "imageprofiles"),
        ] {
            assert_eq!(lookup(input).map(|r| r.plural), Some(plural), "{input}");
        }
        assert!(lookup("pods.apps").is_none());
        assert!(lookup("widgets").is_none());
    }

    #[test]
    fn suggestions() {
        let e = unknown_type_error("deploymnt").to_string();
        assert!(e.contains("Did you mean \"deployments\"?"), "{e}");
        assert!(!unknown_type_error("zzzzzzzzzz")
            .to_string()
            .contains("Did you mean"));
    }

    #[test]
    fn selections() {
        let s = parse_selection(&["deploy/web".into(), "po/a".into(), "po/b".into()]).unwrap();
        assert_eq!(s.groups.len(), 2);
        assert_eq!(s.groups[1].1, vec!["a", "b"]);
        let s = parse_selection(&["po,svc".into(), "x".into()]).unwrap();
        assert_eq!(s.groups.len(), 2);
        assert_eq!(s.groups[0].1, vec!["x"]);
        let s = parse_selection(&["all".into()]).unwrap();
        assert_eq!(s.groups.len(), 4);
        assert!(parse_selection(&["pods".into(), "po/x".into()]).is_err());
        assert!(parse_selection(&["nope".into()]).is_err());
        assert_eq!(
            lookup("deploy").unwrap().type_name(),
            "deployment.apps".to_string()
        );
    }
}
