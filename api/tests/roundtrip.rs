//! Every kind decodes strictly from a realistic manifest (JSON and YAML) and re-serialises to the
//! same document: no field lost or invented. Each manifest is also valid as written.

use kapsel_api::codec::{from_value_strict, parse_document};
use kapsel_api::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

const NAMESPACE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: team-a
  uid: 6f1c1a52-7a0e-4c36-9a77-0d8e1f5c2b11
  resourceVersion: "12"
  creationTimestamp: "2024-01-02T03:04:05Z"
  labels: {kubernetes.io/metadata.name: team-a, env: prod}
  annotations: {owner: alice@example.com}
  finalizers: [example.com/cleanup]
spec:
  finalizers: [kubernetes]
status:
  phase: Active
  conditions:
  - {type: NamespaceDeletionDiscoveryFailure, status: "False", lastTransitionTime: "2024-01-02T03:04:05Z", reason: ResourcesDiscovered, message: All resources successfully discovered}
"#;

const NODE: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: node-1
  labels: {kubernetes.io/hostname: node-1, kubernetes.io/os: linux, kubernetes.io/arch: amd64}
spec:
  podCIDR: 10.244.1.0/24
  podCIDRs: [10.244.1.0/24]
  providerID: kapsel://node-1
  unschedulable: false
  taints:
  - {key: node.kubernetes.io/not-ready, effect: NoExecute, timeAdded: "2024-01-02T03:04:05Z"}
  - {key: dedicated, value: gpu, effect: NoSchedule}
status:
  capacity: {cpu: "4", memory: 8Gi, pods: "110", ephemeral-storage: 100Gi}
  allocatable: {cpu: 3800m, memory: 7600Mi, pods: "110", ephemeral-storage: 95Gi}
  conditions:
  - {type: Ready, status: "True", lastHeartbeatTime: "2024-01-02T03:04:05Z", lastTransitionTime: "2024-01-02T03:00:00Z", reason: KubeletReady, message: agent is posting ready status}
  addresses:
  - {type: InternalIP, address: 192.168.1.10}
  - {type: Hostname, address: node-1}
  nodeInfo:
    machineID: abc
    systemUUID: def
    bootID: ghi
    kernelVersion: 6.1.0
    osImage: Debian GNU/Linux 12
    containerRuntimeVersion: kapsel://0.1.0
    kubeletVersion: v1.30.0-kapsel
    kubeProxyVersion: ""
    operatingSystem: linux
    architecture: amd64
  phase: Running
  images:
  - {names: ["docker.io/library/nginx:1.25"], sizeBytes: 70000000}
"#;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web-7d4b9c-abcde
  generateName: web-7d4b9c-
  namespace: default
  uid: 0b6f2a57-1111-2222-3333-444455556666
  resourceVersion: "42"
  generation: 1
  creationTimestamp: "2024-01-02T03:04:05Z"
  deletionTimestamp: "2024-01-02T04:00:00Z"
  deletionGracePeriodSeconds: 30
  labels: {app: web, pod-template-hash: 7d4b9c}
  annotations: {kubectl.kubernetes.io/restartedAt: "2024-01-01T00:00:00Z"}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4b9c, uid: 9a9a9a9a-0000-0000-0000-000000000001, controller: true, blockOwnerDeletion: true}
  finalizers: [example.com/protect]
spec:
  volumes:
  - name: scratch
    emptyDir: {medium: Memory, sizeLimit: 64Mi}
  - name: host
    hostPath: {path: /var/log, type: Directory}
  - name: config
    configMap:
      name: web-config
      items: [{key: app.conf, path: app.conf, mode: 420}]
      defaultMode: 420
      optional: false
  - name: creds
    secret: {secretName: web-secret, defaultMode: 256, optional: true}
  - name: podinfo
    downwardAPI:
      items:
      - {path: labels, fieldRef: {apiVersion: v1, fieldPath: metadata.labels}}
      - {path: cpu, resourceFieldRef: {containerName: web, resource: limits.cpu, divisor: 1m}, mode: 292}
      defaultMode: 420
  initContainers:
  - name: init
    image: busybox:1.36
    command: [sh, -c, "echo init"]
    imagePullPolicy: IfNotPresent
  containers:
  - name: web
    image: nginx:1.25
    command: [nginx]
    args: [-g, daemon off;]
    workingDir: /usr/share/nginx
    ports:
    - {name: http, containerPort: 80, protocol: TCP}
    - {name: metrics, containerPort: 9090, hostPort: 19090, hostIP: 0.0.0.0, protocol: TCP}
    envFrom:
    - {prefix: CFG_, configMapRef: {name: web-config, optional: true}}
    - {secretRef: {name: web-secret}}
    env:
    - {name: MODE, value: production}
    - {name: POD_NAME, valueFrom: {fieldRef: {apiVersion: v1, fieldPath: metadata.name}}}
    - {name: CPU_LIMIT, valueFrom: {resourceFieldRef: {containerName: web, resource: limits.cpu, divisor: "1"}}}
    - {name: LEVEL, valueFrom: {configMapKeyRef: {name: web-config, key: level, optional: true}}}
    - {name: TOKEN, valueFrom: {secretKeyRef: {name: web-secret, key: token}}}
    resources:
      limits: {cpu: 500m, memory: 256Mi}
      requests: {cpu: 250m, memory: 128Mi}
    volumeMounts:
    - {name: scratch, mountPath: /tmp}
    - {name: config, mountPath: /etc/web, readOnly: true, subPath: conf, mountPropagation: None}
    livenessProbe:
      httpGet:
        path: /healthz
        port: http
        host: 127.0.0.1
        scheme: HTTP
        httpHeaders: [{name: X-Probe, value: live}]
      initialDelaySeconds: 5
      timeoutSeconds: 2
      periodSeconds: 10
      successThreshold: 1
      failureThreshold: 3
      terminationGracePeriodSeconds: 10
    readinessProbe:
      tcpSocket: {port: 80}
      periodSeconds: 5
    startupProbe:
      exec: {command: [cat, /tmp/ready]}
      failureThreshold: 30
    lifecycle:
      postStart: {exec: {command: [sh, -c, "echo started"]}}
      preStop: {httpGet: {path: /drain, port: 80}}
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: FallbackToLogsOnError
    imagePullPolicy: IfNotPresent
    securityContext:
      capabilities: {add: [NET_BIND_SERVICE], drop: [ALL]}
      privileged: false
      runAsUser: 101
      runAsGroup: 101
      runAsNonRoot: true
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      seccompProfile: {type: RuntimeDefault}
      procMount: Default
    stdin: false
    tty: false
  restartPolicy: Always
  terminationGracePeriodSeconds: 30
  activeDeadlineSeconds: 3600
  dnsPolicy: ClusterFirst
  nodeSelector: {kubernetes.io/os: linux}
  serviceAccountName: web
  automountServiceAccountToken: false
  nodeName: node-1
  hostNetwork: false
  hostPID: false
  hostIPC: false
  shareProcessNamespace: false
  securityContext:
    runAsUser: 1000
    runAsGroup: 1000
    runAsNonRoot: true
    supplementalGroups: [2000]
    fsGroup: 2000
    seccompProfile: {type: Localhost, localhostProfile: profiles/web.json}
    sysctls: [{name: net.ipv4.ip_local_port_range, value: "1024 65535"}]
  imagePullSecrets: [{name: regcred}]
  hostname: web-0
  subdomain: web
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - {key: kubernetes.io/arch, operator: In, values: [amd64, arm64]}
          - {key: cpu-count, operator: Gt, values: ["2"]}
          matchFields:
          - {key: metadata.name, operator: NotIn, values: [node-9]}
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 50
        preference:
          matchExpressions: [{key: disk, operator: Exists}]
  schedulerName: kapsel
  tolerations:
  - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 300}
  - {key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}
  priorityClassName: high
  priority: 1000
  enableServiceLinks: true
  hostUsers: true
status:
  phase: Running
  conditions:
  - {type: Ready, status: "True", lastProbeTime: "2024-01-02T03:05:00Z", lastTransitionTime: "2024-01-02T03:05:00Z"}
  message: ok
  reason: Started
  hostIP: 192.168.1.10
  podIP: 10.244.1.7
  podIPs: [{ip: 10.244.1.7}]
  startTime: "2024-01-02T03:04:06Z"
  initContainerStatuses:
  - name: init
    state: {terminated: {exitCode: 0, reason: Completed, startedAt: "2024-01-02T03:04:06Z", finishedAt: "2024-01-02T03:04:07Z", containerID: "kapsel://1"}}
    ready: true
    restartCount: 0
    image: busybox:1.36
    imageID: sha256:aaaa
    containerID: kapsel://1
  containerStatuses:
  - name: web
    state: {running: {startedAt: "2024-01-02T03:04:08Z"}}
    lastState: {waiting: {reason: ContainerCreating, message: pulling}}
    ready: true
    restartCount: 1
    image: nginx:1.25
    imageID: sha256:bbbb
    containerID: kapsel://2
    started: true
  qosClass: Burstable
"#;

const REPLICA_SET: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-7d4b9c
  namespace: default
  labels: {app: web, pod-template-hash: 7d4b9c}
  annotations: {deployment.kubernetes.io/revision: "3", deployment.kubernetes.io/desired-replicas: "3", deployment.kubernetes.io/max-replicas: "4"}
  ownerReferences:
  - {apiVersion: apps/v1, kind: Deployment, name: web, uid: 1b1b1b1b-0000-0000-0000-000000000002, controller: true, blockOwnerDeletion: true}
spec:
  replicas: 3
  minReadySeconds: 5
  selector:
    matchLabels: {app: web, pod-template-hash: 7d4b9c}
  template:
    metadata:
      labels: {app: web, pod-template-hash: 7d4b9c}
    spec:
      containers:
      - {name: web, image: "nginx:1.25", ports: [{containerPort: 80, protocol: TCP}]}
      restartPolicy: Always
status:
  replicas: 3
  fullyLabeledReplicas: 3
  readyReplicas: 2
  availableReplicas: 2
  observedGeneration: 4
  conditions:
  - {type: ReplicaFailure, status: "False", lastTransitionTime: "2024-01-02T03:04:05Z", reason: Ok, message: fine}
"#;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  generation: 4
  labels: {app: web}
  annotations: {deployment.kubernetes.io/revision: "3"}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
    matchExpressions:
    - {key: tier, operator: In, values: [frontend]}
    - {key: canary, operator: DoesNotExist}
  template:
    metadata:
      labels: {app: web, tier: frontend}
      annotations: {prometheus.io/scrape: "true"}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        resources:
          limits: {cpu: "1", memory: 512Mi}
          requests: {cpu: 100m, memory: 64Mi}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 0, maxSurge: 25%}
  minReadySeconds: 10
  revisionHistoryLimit: 5
  paused: false
  progressDeadlineSeconds: 600
status:
  observedGeneration: 4
  replicas: 3
  updatedReplicas: 3
  readyReplicas: 3
  availableReplicas: 3
  unavailableReplicas: 0
  conditions:
  - {type: Available, status: "True", lastUpdateTime: "2024-01-02T03:04:05Z", lastTransitionTime: "2024-01-02T03:04:05Z", reason: MinimumReplicasAvailable, message: Deployment has minimum availability.}
  - {type: Progressing, status: "True", lastUpdateTime: "2024-01-02T03:04:05Z", lastTransitionTime: "2024-01-02T03:00:00Z", reason: NewReplicaSetAvailable, message: ReplicaSet "web-7d4b9c" has successfully progressed.}
  collisionCount: 0
"#;

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  ports:
  - {name: http, protocol: TCP, port: 80, targetPort: http, nodePort: 30080, appProtocol: http}
  - {name: metrics, protocol: TCP, port: 9090, targetPort: 9090, nodePort: 30090}
  selector: {app: web}
  clusterIP: 10.96.0.15
  clusterIPs: [10.96.0.15]
  type: NodePort
  externalIPs: [192.168.1.200]
  sessionAffinity: ClientIP
  externalTrafficPolicy: Local
  internalTrafficPolicy: Cluster
  publishNotReadyAddresses: false
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
status:
  loadBalancer: {}
  conditions:
  - {type: Ready, status: "True", lastTransitionTime: "2024-01-02T03:04:05Z", reason: Ok, message: ok}
"#;

const ENDPOINTS: &str = r#"
apiVersion: v1
kind: Endpoints
metadata:
  name: web
  namespace: default
  labels: {app: web}
subsets:
- addresses:
  - ip: 10.244.1.7
    hostname: web-0
    nodeName: node-1
    targetRef: {kind: Pod, namespace: default, name: web-7d4b9c-abcde, uid: 0b6f2a57-1111-2222-3333-444455556666, resourceVersion: "42"}
  notReadyAddresses:
  - {ip: 10.244.2.9, nodeName: node-2}
  ports:
  - {name: http, port: 80, protocol: TCP, appProtocol: http}
  - {name: metrics, port: 9090, protocol: TCP}
"#;

const CONFIG_MAP: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: default
data:
  app.conf: |
    listen 80;
    root /srv;
  level: debug
binaryData:
  logo.png: iVBORw0KGgo=
immutable: false
"#;

const SECRET: &str = r#"
apiVersion: v1
kind: Secret
metadata:
  name: web-tls
  namespace: default
type: kubernetes.io/tls
data:
  tls.crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t
  tls.key: LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t
stringData:
  note: hello
immutable: true
"#;

const LIMIT_RANGE: &str = r#"
apiVersion: v1
kind: LimitRange
metadata:
  name: limits
  namespace: default
spec:
  limits:
  - type: Container
    max: {cpu: "2", memory: 1Gi}
    min: {cpu: 50m, memory: 32Mi}
    default: {cpu: 500m, memory: 256Mi}
    defaultRequest: {cpu: 100m, memory: 64Mi}
    maxLimitRequestRatio: {cpu: "10"}
  - type: Pod
    max: {cpu: "4", memory: 2Gi}
  - type: PersistentVolumeClaim
    min: {storage: 1Gi}
    max: {storage: 10Gi}
"#;

const RESOURCE_QUOTA: &str = r#"
apiVersion: v1
kind: ResourceQuota
metadata:
  name: quota
  namespace: default
spec:
  hard: {pods: "10", requests.cpu: "4", requests.memory: 8Gi, limits.cpu: "8", limits.memory: 16Gi, count/deployments.apps: "5", services.nodeports: "2"}
  scopes: [NotTerminating]
status:
  hard: {pods: "10", requests.cpu: "4"}
  used: {pods: "3", requests.cpu: 750m}
"#;

const EVENT: &str = r#"
apiVersion: v1
kind: Event
metadata:
  name: web-7d4b9c-abcde.17a1b2c3d4e5f607
  namespace: default
involvedObject:
  apiVersion: v1
  kind: Pod
  name: web-7d4b9c-abcde
  namespace: default
  uid: 0b6f2a57-1111-2222-3333-444455556666
  resourceVersion: "42"
  fieldPath: spec.containers{web}
reason: Pulled
message: Container image "nginx:1.25" already present on machine
source: {component: kapsel-agent, host: node-1}
firstTimestamp: "2024-01-02T03:04:05Z"
lastTimestamp: "2024-01-02T03:04:09Z"
eventTime: "2024-01-02T03:04:05.123456Z"
count: 2
type: Normal
action: Pulling
reportingComponent: kapsel-agent
reportingInstance: node-1
"#;

const LEASE: &str = r#"
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: node-1
  namespace: kube-node-lease
  ownerReferences:
  - {apiVersion: v1, kind: Node, name: node-1, uid: 5c5c5c5c-0000-0000-0000-000000000003}
spec:
  holderIdentity: node-1
  leaseDurationSeconds: 40
  acquireTime: "2024-01-02T03:04:05.000000Z"
  renewTime: "2024-01-02T03:04:45.654321Z"
  leaseTransitions: 1
"#;

/// Decode `yaml` (and its JSON rendering) strictly as `T` and check it re-serialises unchanged.
fn round_trip<T: DeserializeOwned + Serialize + Validate>(yaml: &str) -> T {
    let from_yaml = parse_document(yaml.as_bytes()).expect("YAML parses");
    let json_text = serde_json::to_string_pretty(&from_yaml).unwrap();
    let from_json = parse_document(json_text.as_bytes()).expect("JSON parses");
    assert_eq!(from_yaml, from_json);
    let mut last = None;
    for input in [from_yaml, from_json] {
        let obj: T = from_value_strict(input.clone()).unwrap_or_else(|e| panic!("{e}"));
        let out: Value = serde_json::to_value(&obj).unwrap();
        assert_eq!(out, input, "round trip changed the document");
        last = Some(obj);
    }
    let obj = last.unwrap();
    let errs = obj.validate();
    assert!(
        errs.is_empty(),
        "manifest should be valid: {:#?}",
        errs.iter().map(|e| e.to_string()).collect::<Vec<_>>()
    );
    obj
}

#[test]
fn namespace() {
    let ns: Namespace = round_trip(NAMESPACE);
    assert_eq!(ns.metadata.labels["env"], "prod");
}

#[test]
fn node() {
    let n: Node = round_trip(NODE);
    assert_eq!(n.spec.unwrap().taints.len(), 2);
}

#[test]
fn pod_with_every_supported_field() {
    let p: Pod = round_trip(POD);
    let spec = p.spec.unwrap();
    assert_eq!(spec.containers[0].ports[1].host_port, Some(19090));
    assert_eq!(
        spec.containers[0].resources.as_ref().unwrap().limits["memory"].value(),
        Ok(256 << 20)
    );
}

#[test]
fn replica_set() {
    let _: ReplicaSet = round_trip(REPLICA_SET);
}

#[test]
fn deployment() {
    let d: Deployment = round_trip(DEPLOYMENT);
    let ru = d.spec.unwrap().strategy.unwrap().rolling_update.unwrap();
    assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(ru.max_surge, Some(IntOrString::String("25%".into())));
}

#[test]
fn service() {
    let _: Service = round_trip(SERVICE);
}

#[test]
fn endpoints() {
    let _: Endpoints = round_trip(ENDPOINTS);
}

#[test]
fn config_map() {
    let c: ConfigMap = round_trip(CONFIG_MAP);
    assert!(c.data["app.conf"].contains("listen 80;"));
}

#[test]
fn secret() {
    let _: Secret = round_trip(SECRET);
}

#[test]
fn limit_range() {
    let _: LimitRange = round_trip(LIMIT_RANGE);
}

#[test]
fn resource_quota() {
    let _: ResourceQuota = round_trip(RESOURCE_QUOTA);
}

#[test]
fn event() {
    let _: Event = round_trip(EVENT);
}

#[test]
fn lease() {
    let _: Lease = round_trip(LEASE);
}

#[test]
fn unknown_fields_are_rejected() {
    let mut v = parse_document(POD.as_bytes()).unwrap();
    v["spec"]["containers"][0]["bogus"] = Value::Bool(true);
    v["metadata"]["nope"] = Value::Null;
    let err = from_value_strict::<Pod>(v).unwrap_err();
    assert_eq!(
        err.to_string(),
        "strict decoding error: unknown field \"metadata.nope\", unknown field \"spec.containers[0].bogus\""
    );
}

/// Defaulting is idempotent and leaves a valid object valid.
#[test]
fn defaults_are_idempotent_and_valid() {
    fn check<
        T: DeserializeOwned + Serialize + Validate + Defaults + Clone + PartialEq + std::fmt::Debug,
    >(
        yaml: &str,
    ) {
        let mut obj: T = from_value_strict(parse_document(yaml.as_bytes()).unwrap()).unwrap();
        obj.apply_defaults();
        let once = obj.clone();
        obj.apply_defaults();
        assert_eq!(obj, once);
        let errs: Vec<String> = obj.validate().iter().map(|e| e.to_string()).collect();
        assert!(errs.is_empty(), "{errs:#?}");
    }
    check::<Namespace>(NAMESPACE);
    check::<Node>(NODE);
    check::<Pod>(POD);
    check::<ReplicaSet>(REPLICA_SET);
    check::<Deployment>(DEPLOYMENT);
    check::<Service>(SERVICE);
    check::<Endpoints>(ENDPOINTS);
    check::<ConfigMap>(CONFIG_MAP);
    check::<Secret>(SECRET);
    check::<LimitRange>(LIMIT_RANGE);
    check::<ResourceQuota>(RESOURCE_QUOTA);
    check::<Event>(EVENT);
    check::<Lease>(LEASE);
}
