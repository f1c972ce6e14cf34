//! Resource amounts as integers, and the pod request arithmetic of Kubernetes'
//! `computePodResourceRequest` (noderesources/fit.go).
//!
//! Quantities are parsed once, when a pod or node enters the cache; the per-node loop only adds and
//! compares integers.

use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};

use kapsel_api::{Container, Node, Pod, Quantity, ResourceList};

use crate::error::{Error, Result};

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PODS: &str = "pods";

/// Kubernetes' `DefaultMilliCPURequest`: what a container without a cpu request counts as when
/// *scoring* (never when filtering).
pub const DEFAULT_MILLI_CPU_REQUEST: MilliCpu = MilliCpu(100);
/// Kubernetes' `DefaultMemoryRequest` (200 MiB), for scoring only.
pub const DEFAULT_MEMORY_REQUEST: Bytes = Bytes(200 * 1024 * 1024);

macro_rules! unit {
    ($(#[$m:meta])* $name:ident, $suffix:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub i64);

        impl Add for $name {
            type Output = $name;
            fn add(self, o: $name) -> $name {
                $name(self.0.saturating_add(o.0))
            }
        }
        impl Sub for $name {
            type Output = $name;
            fn sub(self, o: $name) -> $name {
                $name(self.0.saturating_sub(o.0))
            }
        }
        impl AddAssign for $name {
            fn add_assign(&mut self, o: $name) {
                *self = *self + o;
            }
        }
        impl SubAssign for $name {
            fn sub_assign(&mut self, o: $name) {
                *self = *self - o;
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", self.0, $suffix)
            }
        }
    };
}

unit!(
    /// Thousandths of a cpu (`250m` → 250).
    MilliCpu,
    "m"
);
unit!(
    /// Bytes of memory or ephemeral storage (`128Mi` → 134217728).
    Bytes,
    "B"
);

/// The resources the scheduler accounts for. `pods` is a count (a node's `pods` allocatable, or
/// the number of pods placed on it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu: MilliCpu,
    pub memory: Bytes,
    pub ephemeral_storage: Bytes,
    pub pods: i64,
}

impl Resources {
    pub fn new(cpu_milli: i64, memory: i64) -> Self {
        Resources {
            cpu: MilliCpu(cpu_milli),
            memory: Bytes(memory),
            ..Default::default()
        }
    }

    /// Element-wise maximum (init containers run one at a time, before the app containers).
    pub fn max(self, o: Resources) -> Resources {
        Resources {
            cpu: self.cpu.max(o.cpu),
            memory: self.memory.max(o.memory),
            ephemeral_storage: self.ephemeral_storage.max(o.ephemeral_storage),
            pods: self.pods.max(o.pods),
        }
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        Resources {
            cpu: self.cpu + o.cpu,
            memory: self.memory + o.memory,
            ephemeral_storage: self.ephemeral_storage + o.ephemeral_storage,
            pods: self.pods.saturating_add(o.pods),
        }
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, o: Resources) {
        *self = *self + o;
    }
}

impl SubAssign for Resources {
    fn sub_assign(&mut self, o: Resources) {
        self.cpu -= o.cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods = self.pods.saturating_sub(o.pods);
    }
}

fn parse(object: &str, resource: &str, q: &Quantity, milli: bool) -> Result<i64> {
    let r = if milli { q.milli_value() } else { q.value() };
    r.map_err(|source| Error::InvalidQuantity {
        object: object.to_string(),
        resource: resource.to_string(),
        value: q.as_str().to_string(),
        source,
    })
}

/// The value of one resource in a list: milli-units for cpu, units (rounded up) for the rest.
fn get(object: &str, list: &ResourceList, resource: &str) -> Result<Option<i64>> {
    match list.get(resource) {
        None => Ok(None),
        Some(q) => parse(object, resource, q, resource == CPU).map(Some),
    }
}

/// One container's request. A resource with a limit but no request counts the limit, as the
/// Kubernetes API server's defaulting does (`requests` default to `limits`).
fn container_request(object: &str, c: &Container) -> Result<(Resources, bool, bool)> {
    let Some(rr) = &c.resources else {
        return Ok((Resources::default(), false, false));
    };
    let one = |name: &str| -> Result<Option<i64>> {
        match get(object, &rr.requests, name)? {
            Some(v) => Ok(Some(v)),
            None => get(object, &rr.limits, name),
        }
    };
    let cpu = one(CPU)?;
    let mem = one(MEMORY)?;
    let eph = one(EPHEMERAL_STORAGE)?;
    Ok((
        Resources {
            cpu: MilliCpu(cpu.unwrap_or(0)),
            memory: Bytes(mem.unwrap_or(0)),
            ephemeral_storage: Bytes(eph.unwrap_or(0)),
            pods: 0,
        },
        cpu.is_some(),
        mem.is_some(),
    ))
}

/// What a pod asks for, computed once per pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodRequest {
    /// For filtering: sum over containers, element-wise max with each init container.
    /// `pods` is always 1.
    pub request: Resources,
    /// For scoring: like `request`, but a container with no cpu (memory) request counts as
    /// 100m (200 MiB), so that best-effort pods still spread (Kubernetes' `GetNonzeroRequests`).
    pub non_zero: Resources,
}

impl PodRequest {
    pub fn of(pod: &Pod) -> Result<PodRequest> {
        let object = format_key(pod);
        let mut req = Resources::default();
        let mut nz = Resources::default();
        let Some(spec) = &pod.spec else {
            return Ok(PodRequest {
                request: Resources { pods: 1, ..req },
                non_zero: Resources { pods: 1, ..nz },
            });
        };
        for c in &spec.containers {
            let (r, has_cpu, has_mem) = container_request(&object, c)?;
            req += r;
            nz += non_zero(r, has_cpu, has_mem);
        }
        for c in &spec.init_containers {
            let (r, has_cpu, has_mem) = container_request(&object, c)?;
            req = req.max(r);
            nz = nz.max(non_zero(r, has_cpu, has_mem));
        }
        req.pods = 1;
        nz.pods = 1;
        Ok(PodRequest {
            request: req,
            non_zero: nz,
        })
    }
}

fn non_zero(mut r: Resources, has_cpu: bool, has_mem: bool) -> Resources {
    if !has_cpu {
        r.cpu = DEFAULT_MILLI_CPU_REQUEST;
    }
    if !has_mem {
        r.memory = DEFAULT_MEMORY_REQUEST;
    }
    r
}

/// A node's allocatable resources (falling back to capacity when allocatable is absent, as the
/// kubelet reports both). `ephemeral_storage` is `None` when the node does not report it; the fit
/// filter then does not check it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocatable {
    pub resources: Resources,
    pub has_ephemeral_storage: bool,
}

impl Allocatable {
    pub fn of(node: &Node) -> Result<Allocatable> {
        let object = node.metadata.name.clone().unwrap_or_default();
        let Some(status) = &node.status else {
            return Ok(Allocatable::default());
        };
        let list = if status.allocatable.is_empty() {
            &status.capacity
        } else {
            &status.allocatable
        };
        let eph = get(&object, list, EPHEMERAL_STORAGE)?;
        Ok(Allocatable {
            resources: Resources {
                cpu: MilliCpu(get(&object, list, CPU)?.unwrap_or(0)),
                memory: Bytes(get(&object, list, MEMORY)?.unwrap_or(0)),
                ephemeral_storage: Bytes(eph.unwrap_or(0)),
                // A node that does not say how many pods it takes gets kubelet's default, 110.
                pods: get(&object, list, PODS)?.unwrap_or(110),
            },
            has_ephemeral_storage: eph.is_some(),
        })
    }
}

/// `namespace/name`.
pub fn format_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn pod_request_table() {
        // (name, containers, init containers, expected request cpu m, mem bytes, expected non-zero cpu m, mem)
        struct Case {
            name: &'static str,
            containers: Vec<(&'static str, &'static str)>,
            init: Vec<(&'static str, &'static str)>,
            want: (i64, i64),
            want_nz: (i64, i64),
        }
        const MI: i64 = 1024 * 1024;
        let cases = vec![
            Case {
                name: "no containers requests anything: zero request, defaults for scoring",
                containers: vec![("", "")],
                init: vec![],
                want: (0, 0),
                want_nz: (100, 200 * MI),
            },
            Case {
                name: "sum of containers",
                containers: vec![("250m", "128Mi"), ("500m", "256Mi")],
                init: vec![],
                want: (750, 384 * MI),
                want_nz: (750, 384 * MI),
            },
            Case {
                // 1 + 1 = 2 cpu from containers, init asks 3 cpu but less memory:
                // max(2000, 3000) = 3000m; max(2Gi, 1Gi) = 2Gi.
                name: "init container bigger in cpu only",
                containers: vec![("1", "1Gi"), ("1", "1Gi")],
                init: vec![("3", "1Gi")],
                want: (3000, 2048 * MI),
                want_nz: (3000, 2048 * MI),
            },
            Case {
                // Each init container is compared alone (they run sequentially): max(500, 2000, 1000).
                name: "init containers are not summed",
                containers: vec![("500m", "100Mi")],
                init: vec![("2", "50Mi"), ("1", "300Mi")],
                want: (2000, 300 * MI),
                want_nz: (2000, 300 * MI),
            },
            Case {
                name: "cpu only: memory non-zero default applies for scoring",
                containers: vec![("200m", "")],
                init: vec![],
                want: (200, 0),
                want_nz: (200, 200 * MI),
            },
            Case {
                name: "fractional quantities round up",
                containers: vec![("0.0001", "1.5")],
                init: vec![],
                want: (1, 2),
                want_nz: (1, 2),
            },
        ];
        for c in cases {
            let mut b = PodBuilder::new("p");
            for (cpu, mem) in &c.containers {
                b = b.container(cpu, mem);
            }
            for (cpu, mem) in &c.init {
                b = b.init_container(cpu, mem);
            }
            let r = PodRequest::of(&b.build()).expect(c.name);
            assert_eq!(
                (r.request.cpu.0, r.request.memory.0),
                c.want,
                "request: {}",
                c.name
            );
            assert_eq!(
                (r.non_zero.cpu.0, r.non_zero.memory.0),
                c.want_nz,
                "non-zero: {}",
                c.name
            );
            assert_eq!(r.request.pods, 1, "{}", c.name);
        }
    }

    #[test]
    fn limits_stand_in_for_missing_requests() {
        let mut pod = PodBuilder::new("p").container("", "").build();
        let c = &mut pod.spec.as_mut().expect("spec").containers[0];
        let rr = c.resources.get_or_insert_with(Default::default);
        rr.limits.insert("cpu".into(), Quantity::from("2"));
        rr.requests.insert("memory".into(), Quantity::from("1Gi"));
        rr.limits.insert("memory".into(), Quantity::from("2Gi"));
        let r = PodRequest::of(&pod).expect("parse");
        assert_eq!(r.request.cpu, MilliCpu(2000));
        assert_eq!(r.request.memory, Bytes(1 << 30));
    }

    #[test]
    fn ephemeral_storage_request() {
        let mut pod = PodBuilder::new("p").container("100m", "").build();
        let c = &mut pod.spec.as_mut().expect("spec").containers[0];
        let rr = c.resources.get_or_insert_with(Default::default);
        rr.requests
            .insert("ephemeral-storage".into(), Quantity::from("1Gi"));
        let r = PodRequest::of(&pod).expect("parse");
        assert_eq!(r.request.ephemeral_storage, Bytes(1 << 30));
    }

    #[test]
    fn invalid_quantity_is_an_error_not_a_panic() {
        let pod = PodBuilder::new("p").container("lots", "").build();
        let err = PodRequest::of(&pod).expect_err("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("\"lots\"") && msg.contains("default/p"),
            "{msg}"
        );
    }

    #[test]
    fn node_allocatable_falls_back_to_capacity_and_default_pods() {
        let mut n = NodeBuilder::new("n").build();
        let st = n.status.as_mut().expect("status");
        st.capacity = std::mem::take(&mut st.allocatable);
        st.capacity.remove("pods");
        let a = Allocatable::of(&n).expect("parse");
        assert_eq!(a.resources.cpu, MilliCpu(4000));
        assert_eq!(a.resources.pods, 110);
        assert!(!a.has_ephemeral_storage);
    }
}
