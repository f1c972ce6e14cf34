//! Garbage collector (`pkg/controller/garbagecollector`) as a pure plan over the dependents graph:
//! * an object all of whose owners are gone is deleted (background propagation);
//! * an owner being deleted with the `orphan` finalizer gets its dependents' references removed,
//!   then the finalizer;
//! * an owner being deleted with the `foregroundDeletion` finalizer gets its dependents deleted
//!   (foreground again for dependents that have dependents themselves) and loses the finalizer
//!   once no dependent with `blockOwnerDeletion` is left;
//! * references to owners that are gone are removed from objects that still have a live owner.
//!
//! "Gone" is judged from caches here; the runtime confirms an owner's absence with a live GET by
//! uid before acting on it, as Kubernetes' `isDangling` does.

use std::collections::HashMap;

use kapsel_api::{ObjectMeta, OwnerReference, Resource};

pub const FINALIZER_ORPHAN: &str = "orphan";
pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";

/// Identity of an object in the graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjId {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// What the GC knows about one object.
#[derive(Clone, Debug, PartialEq)]
pub struct GcObject {
    pub id: ObjId,
    pub owners: Vec<OwnerReference>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl GcObject {
    pub fn of<K: Resource>(o: &K) -> Self {
        Self::from_meta(K::API_VERSION, K::KIND, o.meta())
    }
    pub fn from_meta(api_version: &str, kind: &str, m: &ObjectMeta) -> Self {
        GcObject {
            id: ObjId {
                api_version: api_version.into(),
                kind: kind.into(),
                namespace: m.namespace().into(),
                name: m.name().into(),
                uid: m.uid().into(),
            },
            owners: m.owner_references.clone(),
            deleting: m.deletion_timestamp.is_some(),
            finalizers: m.finalizers.clone(),
        }
    }
    fn has(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
}

impl Propagation {
    pub fn as_str(self) -> &'static str {
        match self {
            Propagation::Background => "Background",
            Propagation::Foreground => "Foreground",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum GcAction {
    /// Delete `obj` (with a uid precondition). `dangling` lists the owner references whose
    /// absence justified it (the runtime re-checks them live).
    Delete {
        obj: ObjId,
        propagation: Propagation,
        dangling: Vec<OwnerReference>,
    },
    /// Remove the owner references with these uids from `obj`.
    RemoveOwnerRefs {
        obj: ObjId,
        owner_uids: Vec<String>,
        dangling: Vec<OwnerReference>,
    },
    RemoveFinalizer {
        obj: ObjId,
        finalizer: &'static str,
    },
}

/// One pass over the graph. `known_kinds` are the kinds whose caches the GC has: references
/// to other kinds are never considered dangling (nothing is collected on a guess).
pub fn plan(objs: &[GcObject], known_kinds: &[&str]) -> Vec<GcAction> {
    let by_uid: HashMap<&str, &GcObject> = objs.iter().map(|o| (o.id.uid.as_str(), o)).collect();
    let mut dependents: HashMap<&str, Vec<&GcObject>> = HashMap::new();
    for o in objs {
        for r in &o.owners {
            dependents.entry(r.uid.as_str()).or_default().push(o);
        }
    }
    let deps_of = |uid: &str| dependents.get(uid).cloned().unwrap_or_default();
    let mut out = Vec::new();
    for o in objs {
        // Owners being deleted.
        if o.deleting && o.has(FINALIZER_ORPHAN) {
            let deps = deps_of(&o.id.uid);
            for d in &deps {
                out.push(GcAction::RemoveOwnerRefs {
                    obj: d.id.clone(),
                    owner_uids: vec![o.id.uid.clone()],
                    dangling: vec![],
                });
            }
            if deps.is_empty() {
                out.push(GcAction::RemoveFinalizer {
                    obj: o.id.clone(),
                    finalizer: FINALIZER_ORPHAN,
                });
            }
            continue;
        }
        if o.deleting && o.has(FINALIZER_FOREGROUND) {
            let deps = deps_of(&o.id.uid);
            let blocking = deps.iter().any(|d| {
                d.owners
                    .iter()
                    .any(|r| r.uid == o.id.uid && r.block_owner_deletion == Some(true))
            });
            for d in &deps {
                if !d.deleting {
                    out.push(GcAction::Delete {
                        obj: d.id.clone(),
                        propagation: if deps_of(&d.id.uid).is_empty() {
                            Propagation::Background
                        } else {
                            Propagation::Foreground
                        },
                        dangling: vec![],
                    });
                }
            }
            if !blocking {
                out.push(GcAction::RemoveFinalizer {
                    obj: o.id.clone(),
                    finalizer: FINALIZER_FOREGROUND,
                });
            }
        }
        // Dependents whose owners are gone.
        if o.owners.is_empty() || o.deleting {
            continue;
        }
        let mut solid = 0;
        let mut dangling: Vec<OwnerReference> = vec![];
        let mut waiting: Vec<&OwnerReference> = vec![];
        for r in &o.owners {
            match by_uid.get(r.uid.as_str()) {
                Some(owner) if owner.deleting && owner.has(FINALIZER_FOREGROUND) => waiting.push(r),
                Some(_) => solid += 1,
                None if known_kinds.contains(&r.kind.as_str()) => dangling.push(r.clone()),
                None => solid += 1,
            }
        }
        if solid > 0 {
            if !dangling.is_empty() {
                // Waiting owners keep their references: they are about to delete us or not.
                out.push(GcAction::RemoveOwnerRefs {
                    obj: o.id.clone(),
                    owner_uids: dangling.iter().map(|r| r.uid.clone()).collect(),
                    dangling,
                });
            }
            continue;
        }
        if !waiting.is_empty() {
            // Handled by the owner's foreground branch above.
            continue;
        }
        if !dangling.is_empty() {
            out.push(GcAction::Delete {
                obj: o.id.clone(),
                propagation: Propagation::Background,
                dangling,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: &str, name: &str, owners: &[(&str, &str, bool)]) -> GcObject {
        GcObject {
            id: ObjId {
                api_version: "v1".into(),
                kind: kind.into(),
                namespace: "ns".into(),
                name: name.into(),
                uid: format!("uid-{name}"),
            },
            owners: owners
                .iter()
                .map(|(k, n, block)| OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: k.to_string(),
                    name: n.to_string(),
                    uid: format!("uid-{n}"),
                    controller: Some(true),
                    block_owner_deletion: Some(*block),
                })
                .collect(),
            deleting: false,
            finalizers: vec![],
        }
    }

    const KINDS: &[&str] = &["Deployment", "ReplicaSet", "Pod"];

    fn deletes(a: &[GcAction]) -> Vec<(&str, Propagation)> {
        a.iter()
            .filter_map(|x| match x {
                GcAction::Delete {
                    obj, propagation, ..
                } => Some((obj.name.as_str(), *propagation)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn background_collects_orphaned_dependents_level_by_level() {
        // The Deployment is gone: its RS is collected; the pods wait for the RS to go.
        let objs = vec![
            obj("ReplicaSet", "rs", &[("Deployment", "d", true)]),
            obj("Pod", "p1", &[("ReplicaSet", "rs", true)]),
        ];
        assert_eq!(
            deletes(&plan(&objs, KINDS)),
            vec![("rs", Propagation::Background)]
        );
        let objs = vec![obj("Pod", "p1", &[("ReplicaSet", "rs", true)])];
        assert_eq!(
            deletes(&plan(&objs, KINDS)),
            vec![("p1", Propagation::Background)]
        );
    }

    #[test]
    fn live_owner_keeps_dependents_and_unknown_kinds_are_never_dangling() {
        let objs = vec![
            obj("Deployment", "d", &[]),
            obj("ReplicaSet", "rs", &[("Deployment", "d", true)]),
            obj("Pod", "p", &[("StatefulSet", "ss", true)]),
        ];
        assert!(plan(&objs, KINDS).is_empty());
    }

    #[test]
    fn dangling_reference_removed_when_another_owner_lives() {
        let objs = vec![
            obj("ReplicaSet", "rs", &[]),
            obj(
                "Pod",
                "p",
                &[("ReplicaSet", "rs", true), ("ReplicaSet", "gone", false)],
            ),
        ];
        let a = plan(&objs, KINDS);
        assert!(
            matches!(&a[..], [GcAction::RemoveOwnerRefs { owner_uids, .. }] if owner_uids == &vec!["uid-gone".to_string()])
        );
    }

    #[test]
    fn orphan_propagation_strips_references_then_finalizer() {
        let mut d = obj("Deployment", "d", &[]);
        d.deleting = true;
        d.finalizers = vec![FINALIZER_ORPHAN.into()];
        let objs = vec![
            d.clone(),
            obj("ReplicaSet", "rs", &[("Deployment", "d", true)]),
        ];
        let a = plan(&objs, KINDS);
        assert!(matches!(&a[..], [GcAction::RemoveOwnerRefs { obj, .. }] if obj.name == "rs"));
        let a = plan(&[d, obj("ReplicaSet", "rs", &[])], KINDS);
        assert_eq!(
            a,
            vec![GcAction::RemoveFinalizer {
                obj: obj("Deployment", "d", &[]).id,
                finalizer: FINALIZER_ORPHAN
            }]
        );
    }

    #[test]
    fn foreground_deletes_dependents_and_waits_for_blocking_ones() {
        let mut d = obj("Deployment", "d", &[]);
        d.deleting = true;
        d.finalizers = vec![FINALIZER_FOREGROUND.into()];
        let rs = obj("ReplicaSet", "rs", &[("Deployment", "d", true)]);
        let pod = obj("Pod", "p", &[("ReplicaSet", "rs", true)]);
        let a = plan(&[d.clone(), rs.clone(), pod.clone()], KINDS);
        // The RS has dependents: deleted in the foreground too. The deployment keeps its finalizer.
        assert_eq!(deletes(&a), vec![("rs", Propagation::Foreground)]);
        assert!(!a
            .iter()
            .any(|x| matches!(x, GcAction::RemoveFinalizer { .. })));
        // RS now foreground-deleting: its pod is deleted.
        let mut rs2 = rs.clone();
        rs2.deleting = true;
        rs2.finalizers = vec![FINALIZER_FOREGROUND.into()];
        let a = plan(&[d.clone(), rs2.clone(), pod], KINDS);
        assert_eq!(deletes(&a), vec![("p", Propagation::Background)]);
        // Pod gone: the RS loses its finalizer; then the deployment.
        let a = plan(&[d.clone(), rs2], KINDS);
        assert!(a.contains(&GcAction::RemoveFinalizer {
            obj: rs.id.clone(),
            finalizer: FINALIZER_FOREGROUND
        }));
        let a = plan(&[d.clone()], KINDS);
        assert_eq!(
            a,
            vec![GcAction::RemoveFinalizer {
                obj: d.id,
                finalizer: FINALIZER_FOREGROUND
            }]
        );
    }

    #[test]
    fn non_blocking_dependents_do_not_hold_the_owner() {
        let mut d = obj("Deployment", "d", &[]);
        d.deleting = true;
        d.finalizers = vec![FINALIZER_FOREGROUND.into()];
        let mut rs = obj("ReplicaSet", "rs", &[("Deployment", "d", false)]);
        rs.deleting = true;
        let a = plan(&[d.clone(), rs], KINDS);
        assert_eq!(
            a,
            vec![GcAction::RemoveFinalizer {
                obj: d.id,
                finalizer: FINALIZER_FOREGROUND
            }]
        );
    }
}
