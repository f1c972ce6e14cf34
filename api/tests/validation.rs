//! Validation and defaulting tables: each invalid case names the exact error (path and message).

use kapsel_api::codec::from_value_strict;
use kapsel_api::*;
use serde_json::{json, Value};

fn pod(spec: Value) -> Pod {
    from_value_strict(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": spec
    }))
    .unwrap()
}

fn errors<T: Validate>(o: &T) -> Vec<String> {
    o.validate().iter().map(|e| e.to_string()).collect()
}

fn base_spec() -> Value {
    json!({"containers": [{"name": "c", "image": "nginx"}]})
}

/// Apply a JSON merge of `patch` onto `base` (objects merged, everything else replaced).
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

#[test]
fn pod_spec_table() {
    let ok: &[Value] = &[
        base_spec(),
        json!({"restartPolicy": "Never"}),
        json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}, {"containerPort": 80, "protocol": "UDP"}]}]}),
        json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}}}]}),
        json!({"tolerations": [{"operator": "Exists"}]}),
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "cpus", "operator": "Gt", "values": ["3"]}]}]}}}}),
    ];
    for patch in ok {
        let mut spec = base_spec();
        merge(&mut spec, patch.clone());
        assert_eq!(errors(&pod(spec.clone())), Vec::<String>::new(), "{spec}");
    }

    let table: &[(Value, &str)] = &[
        (json!({"containers": []}), "spec.containers: Required value"),
        (json!({"containers": [{"name": "c"}]}), "spec.containers[0].image: Required value"),
        (json!({"containers": [{"name": "", "image": "i"}]}), "spec.containers[0].name: Required value"),
        (json!({"containers": [{"name": "Web", "image": "i"}]}),
         "spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
        (json!({"initContainers": [{"name": "c", "image": "i"}]}), "spec.containers[0].name: Duplicate value: \"c\""),
        (json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 0}]}]}),
         "spec.containers[0].ports[0].containerPort: Required value"),
        (json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 70000}]}]}),
         "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"),
        (json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}, {"containerPort": 80}]}]}),
         "spec.containers[0].ports[1]: Duplicate value: \"80/TCP\""),
        (json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "name": "a-very-long-port-name"}]}]}),
         "spec.containers[0].ports[0].name: Invalid value: \"a-very-long-port-name\": must be no more than 15 characters"),
        (json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "protocol": "HTTP"}]}]}),
         "spec.containers[0].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
        (json!({"containers": [{"name": "c", "image": "i", "env": [{"name": "1X"}]}]}),
         "spec.containers[0].env[0].name: Invalid value: \"1X\": a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')"),
        (json!({"volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]}),
         "spec.volumes[1].name: Duplicate value: \"v\""),
        (json!({"volumes": [{"name": "v"}]}), "spec.volumes[0]: Required value: must specify a volume type"),
        (json!({"volumes": [{"name": "v", "emptyDir": {}, "hostPath": {"path": "/x"}}]}),
         "spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type"),
        (json!({"containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}]}),
         "spec.containers[0].volumeMounts[0].name: Invalid value: \"nope\": not found"),
        (json!({"restartPolicy": "Sometimes"}),
         "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""),
        (json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"memory": "64Mi"}, "requests": {"memory": "128Mi"}}}]}),
         "spec.containers[0].resources.requests.memory: Invalid value: \"128Mi\": must be less than or equal to memory limit of 64Mi"),
        (json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"memory": "12x"}}}]}),
         "spec.containers[0].resources.limits.memory: Invalid value: \"12x\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
        (json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "-1"}}}]}),
         "spec.containers[0].resources.requests.cpu: Invalid value: \"-1\": must be greater than or equal to 0"),
        (json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"gpu": "1"}}}]}),
         "spec.containers[0].resources.requests.gpu: Invalid value: \"gpu\": must be a standard resource for containers"),
        (json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"example.com/gpu": "500m"}}}]}),
         "spec.containers[0].resources.limits.example.com/gpu: Invalid value: \"500m\": must be an integer"),
        (json!({"containers": [{"name": "c", "image": "i", "livenessProbe": {"periodSeconds": 5}}]}),
         "spec.containers[0].livenessProbe: Required value: must specify a handler type"),
        (json!({"containers": [{"name": "c", "image": "i", "livenessProbe": {"exec": {"command": ["x"]}, "tcpSocket": {"port": 80}}}]}),
         "spec.containers[0].livenessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type"),
        (json!({"containers": [{"name": "c", "image": "i", "readinessProbe": {"exec": {"command": ["x"]}, "failureThreshold": 0}}]}),
         "spec.containers[0].readinessProbe.failureThreshold: Invalid value: 0: must be greater than or equal to 1"),
        (json!({"containers": [{"name": "c", "image": "i", "livenessProbe": {"exec": {"command": ["x"]}, "successThreshold": 2}}]}),
         "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"),
        (json!({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}),
         "spec.tolerations[0].operator: Invalid value: \"v\": value must be empty when `operator` is 'Exists'"),
        (json!({"tolerations": [{"key": "k", "effect": "Sometimes"}]}),
         "spec.tolerations[0].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""),
        (json!({"tolerations": [{"value": "v"}]}),
         "spec.tolerations[0].operator: Invalid value: \"\": operator must be Exists when `key` is empty, which means \"match all values and all keys\""),
        (json!({"nodeSelector": {"-bad": "x"}}),
         "spec.nodeSelector: Invalid value: \"-bad\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"),
        (json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "cpus", "operator": "Gt", "values": ["1", "2"]}]}]}}}}),
         "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: Required value: must be specified single value when `operator` is 'Lt' or 'Gt'"),
        (json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "cpus", "operator": "Lt", "values": ["x"]}]}]}}}}),
         "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values[0]: Invalid value: \"x\": must be an integer"),
        (json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]}}}}),
         "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator: Invalid value: \"Near\": not a valid selector operator"),
        (json!({"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Sometimes"}]}),
         "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\""),
        (json!({"terminationGracePeriodSeconds": -1}),
         "spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0"),
    ];
    for (patch, want) in table {
        let mut spec = base_spec();
        merge(&mut spec, patch.clone());
        let errs = errors(&pod(spec.clone()));
        assert!(
            errs.iter().any(|e| e == want),
            "{spec}\nwant: {want}\ngot:  {errs:#?}"
        );
    }
}

#[test]
fn metadata_table() {
    let cm = |meta: Value| -> ConfigMap {
        from_value_strict(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}))
            .unwrap()
    };
    let table: &[(Value, &str)] = &[
        (json!({"name": "Foo", "namespace": "d"}),
         "metadata.name: Invalid value: \"Foo\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
        (json!({"namespace": "d"}), "metadata.name: Required value: name or generateName is required"),
        (json!({"name": "a"}), "metadata.namespace: Required value"),
        (json!({"name": "a", "namespace": "d", "labels": {"a": "-x"}}),
         "metadata.labels: Invalid value: \"-x\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
        (json!({"name": "a", "namespace": "d", "labels": {"example.com/": "x"}}),
         "metadata.labels: Invalid value: \"example.com/\": name part must be non-empty"),
        (json!({"name": "a", "namespace": "d", "annotations": {"big": "x".repeat(262145)}}),
         "metadata.annotations: Too long: may not be more than 262144 bytes"),
        (json!({"name": "a", "namespace": "d", "ownerReferences": [{"apiVersion": "", "kind": "K", "name": "n", "uid": "u"}]}),
         "metadata.ownerReferences.apiVersion: Invalid value: \"\": version must not be empty"),
        (json!({"name": "a", "namespace": "d", "ownerReferences": [{"apiVersion": "v1", "kind": "K", "name": "n", "uid": ""}]}),
         "metadata.ownerReferences.uid: Invalid value: \"\": uid must not be empty"),
        (json!({"name": "a", "namespace": "d", "generation": -1}),
         "metadata.generation: Invalid value: -1: must be greater than or equal to 0"),
        (json!({"name": "a", "namespace": "d", "finalizers": ["foo"]}),
         "metadata.finalizers: Invalid value: \"foo\": name is neither a standard finalizer name nor is it fully qualified"),
    ];
    for (meta, want) in table {
        let errs = errors(&cm(meta.clone()));
        assert!(
            errs.iter().any(|e| e == want),
            "{meta}\nwant: {want}\ngot:  {errs:#?}"
        );
    }
    // generateName alone is enough; kinds check apiVersion/kind.
    assert!(errors(&cm(json!({"generateName": "web-", "namespace": "d"}))).is_empty());
    let mut c = cm(json!({"name": "a", "namespace": "d"}));
    c.api_version = "v2".into();
    c.kind = String::new();
    assert_eq!(
        errors(&c),
        vec![
            "apiVersion: Unsupported value: \"v2\": supported values: \"v1\"",
            "kind: Required value"
        ]
    );
    // Namespaces are DNS labels and cluster-scoped.
    let ns: Namespace = from_value_strict(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b", "namespace": "x"}})).unwrap();
    assert_eq!(
        errors(&ns),
        vec![
            "metadata.name: Invalid value: \"a.b\": must not contain dots",
            "metadata.namespace: Forbidden: not allowed on this type"
        ]
    );
}

fn deployment(spec: Value) -> Deployment {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": base_spec()}
        }
    });
    merge(&mut d["spec"], spec);
    from_value_strict(d).unwrap()
}

#[test]
fn deployment_and_replica_set_table() {
    assert!(errors(&deployment(json!({}))).is_empty());
    let table: &[(Value, &str)] = &[
        (json!({"selector": null}), "spec.selector: Required value"),
        (json!({"selector": {"matchLabels": {"app": "db"}}}),
         "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"),
        (json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}),
         "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"),
        (json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}}),
         "spec.selector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"),
        (json!({"replicas": -1}), "spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
        (json!({"strategy": {"type": "BlueGreen"}}),
         "spec.strategy.type: Unsupported value: \"BlueGreen\": supported values: \"Recreate\", \"RollingUpdate\""),
        (json!({"strategy": {"type": "Recreate", "rollingUpdate": {}}}),
         "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"),
        (json!({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}),
         "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"),
        (json!({"strategy": {"rollingUpdate": {"maxSurge": "x"}}}),
         "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"x\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"),
        (json!({"strategy": {"rollingUpdate": {"maxUnavailable": "120%"}}}),
         "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"120%\": must not be greater than 100%"),
        (json!({"revisionHistoryLimit": -1}),
         "spec.revisionHistoryLimit: Invalid value: -1: must be greater than or equal to 0"),
        (json!({"minReadySeconds": 30, "progressDeadlineSeconds": 30}),
         "spec.progressDeadlineSeconds: Invalid value: 30: must be greater than minReadySeconds"),
        (json!({"template": {"spec": {"restartPolicy": "Never"}}}),
         "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""),
        (json!({"template": {"spec": {"containers": [{"name": "c"}]}}}),
         "spec.template.spec.containers[0].image: Required value"),
    ];
    for (patch, want) in table {
        let errs = errors(&deployment(patch.clone()));
        assert!(
            errs.iter().any(|e| e == want),
            "{patch}\nwant: {want}\ngot:  {errs:#?}"
        );
    }

    let mut empty = deployment(json!({}));
    empty.spec.as_mut().unwrap().selector = Some(Default::default());
    assert_eq!(
        errors(&empty),
        vec!["spec.selector: Invalid value: &LabelSelector{MatchLabels:map[string]string{},MatchExpressions:[]LabelSelectorRequirement{},}: empty selector is invalid for deployment"]
    );

    // The selector is immutable.
    let old = deployment(json!({}));
    let mut new = old.clone();
    new.spec
        .as_mut()
        .unwrap()
        .selector
        .as_mut()
        .unwrap()
        .match_labels
        .insert("tier".into(), "x".into());
    new.spec
        .as_mut()
        .unwrap()
        .template
        .as_mut()
        .unwrap()
        .metadata
        .labels
        .insert("tier".into(), "x".into());
    let errs: Vec<String> = new
        .validate_update(&old)
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        errs,
        vec!["spec.selector: Invalid value: &LabelSelector{MatchLabels:map[string]string{app: web,tier: x,},MatchExpressions:[]LabelSelectorRequirement{},}: field is immutable"]
    );
    let mut scaled = old.clone();
    scaled.spec.as_mut().unwrap().replicas = Some(5);
    assert!(scaled.validate_update(&old).is_empty());

    let rs: ReplicaSet = from_value_strict(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "namespace": "default"},
        "spec": {"replicas": -2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "other"}}, "spec": base_spec()}}
    }))
    .unwrap();
    assert_eq!(
        errors(&rs),
        vec![
            "spec.replicas: Invalid value: -2: must be greater than or equal to 0",
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`",
        ]
    );
    let mut rs2 = rs.clone();
    rs2.spec.as_mut().unwrap().selector = Some(Default::default());
    assert!(rs2
        .validate_update(&rs)
        .iter()
        .any(|e| e.field == "spec.selector" && e.detail == "field is immutable"));
}

fn service(spec: Value) -> Service {
    from_value_strict(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": spec
    }))
    .unwrap()
}

#[test]
fn service_table() {
    assert!(errors(&service(json!({"ports": [{"port": 80}]}))).is_empty());
    assert!(errors(&service(json!({"clusterIP": "None"}))).is_empty());
    assert!(errors(&service(
        json!({"type": "ExternalName", "externalName": "db.example.com"})
    ))
    .is_empty());
    let table: &[(Value, &str)] = &[
        (json!({}), "spec.ports: Required value"),
        (json!({"ports": [{"port": 0}]}), "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"),
        (json!({"ports": [{"port": 80}, {"port": 81}]}), "spec.ports[0].name: Required value"),
        (json!({"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}), "spec.ports[1].name: Duplicate value: \"a\""),
        (json!({"ports": [{"port": 80}], "type": "Magic"}),
         "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
        (json!({"ports": [{"port": 80, "nodePort": 80}], "type": "NodePort"}),
         "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"),
        (json!({"ports": [{"port": 80, "nodePort": 30001}]}),
         "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"),
        (json!({"ports": [{"port": 80}], "clusterIP": "10.0.0.300"}),
         "spec.clusterIP: Invalid value: \"10.0.0.300\": must be empty, 'None', or a valid IPv4 address"),
        (json!({"ports": [{"port": 80, "targetPort": 0}], "sessionAffinity": "Sticky"}),
         "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\""),
        (json!({"type": "ExternalName"}), "spec.externalName: Required value"),
    ];
    for (spec, want) in table {
        let errs = errors(&service(spec.clone()));
        assert!(
            errs.iter().any(|e| e == want),
            "{spec}\nwant: {want}\ngot:  {errs:#?}"
        );
    }
    // DNS-1035 names.
    let mut s = service(json!({"ports": [{"port": 80}]}));
    s.metadata.name = Some("1web".into());
    assert!(errors(&s)[0].starts_with("metadata.name: Invalid value: \"1web\": a DNS-1035 label"));
    // clusterIP is immutable once set; an empty one in the update keeps it.
    let old = service(json!({"ports": [{"port": 80}], "clusterIP": "10.96.0.10"}));
    let new = service(json!({"ports": [{"port": 80}], "clusterIP": "10.96.0.11"}));
    assert_eq!(
        new.validate_update(&old)
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>(),
        vec!["spec.clusterIP: Invalid value: \"10.96.0.11\": field is immutable"]
    );
    assert!(service(json!({"ports": [{"port": 81}]}))
        .validate_update(&old)
        .is_empty());
}

#[test]
fn pod_updates() {
    let mut old = pod(
        json!({"containers": [{"name": "c", "image": "nginx:1"}], "tolerations": [{"key": "a", "operator": "Exists"}]}),
    );
    old.metadata.uid = Some("u1".into());
    let mut new = old.clone();
    new.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".into());
    new.spec.as_mut().unwrap().active_deadline_seconds = Some(100);
    new.spec.as_mut().unwrap().tolerations.push(Toleration {
        key: Some("b".into()),
        operator: Some("Exists".into()),
        ..Default::default()
    });
    new.spec.as_mut().unwrap().node_name = Some("node-1".into());
    assert!(
        new.validate_update(&old).is_empty(),
        "{:?}",
        new.validate_update(&old)
    );

    let mut bad = new.clone();
    bad.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    let errs = bad.validate_update(&old);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "spec");
    assert!(errs[0].to_string().starts_with("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations)"));
    assert!(errs[0].detail.contains("spec.restartPolicy"));

    let mut rebind = new.clone();
    rebind.spec.as_mut().unwrap().node_name = Some("node-2".into());
    assert_eq!(
        rebind
            .validate_update(&new)
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>(),
        vec!["spec.nodeName: Invalid value: \"node-2\": field is immutable once set"]
    );
    let mut removed = new.clone();
    removed.spec.as_mut().unwrap().tolerations.clear();
    assert_eq!(
        removed.validate_update(&new)[0].to_string(),
        "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"
    );
    let mut longer = new.clone();
    longer.spec.as_mut().unwrap().active_deadline_seconds = Some(200);
    assert_eq!(
        longer.validate_update(&new)[0].to_string(),
        "spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value"
    );
    let mut renamed = new.clone();
    renamed.metadata.name = Some("q".into());
    renamed.metadata.uid = Some("u2".into());
    assert_eq!(
        renamed
            .validate_update(&new)
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>(),
        vec![
            "metadata.name: Invalid value: \"q\": field is immutable",
            "metadata.uid: Invalid value: \"u2\": field is immutable"
        ]
    );
}

#[test]
fn config_map_and_secret() {
    let cm: ConfigMap = from_value_strict(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"},
        "data": {"a b": "x", "ok": "y"}, "binaryData": {"ok": "AAAA", "bin": "!!"}
    }))
    .unwrap();
    assert_eq!(
        errors(&cm),
        vec![
            "data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            "binaryData[bin]: Invalid value: <binary data>: illegal base64 data at input byte 0",
            "binaryData[ok]: Invalid value: \"ok\": duplicate of key present in data",
        ]
    );
    let big: ConfigMap = from_value_strict(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"},
        "data": {"k": "x".repeat(1024 * 1024 + 1)}
    }))
    .unwrap();
    assert_eq!(
        errors(&big),
        vec!["data: Too long: may not be more than 1048576 bytes"]
    );

    let mut s: Secret = from_value_strict(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "d"},
        "data": {"a": "aGk="}, "stringData": {"b": "hello", "a": "override"}
    }))
    .unwrap();
    s.apply_defaults();
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    assert!(s.string_data.is_empty());
    assert_eq!(s.data["b"], "aGVsbG8=");
    assert_eq!(s.data["a"], "b3ZlcnJpZGU=");
    assert!(errors(&s).is_empty());
    s.data.insert("bad".into(), "###".into());
    assert_eq!(
        errors(&s),
        vec!["data[bad]: Invalid value: <secret data>: illegal base64 data at input byte 0"]
    );
    s.data.remove("bad");

    let mut tls = s.clone();
    tls.type_ = Some("kubernetes.io/tls".into());
    assert_eq!(
        errors(&tls),
        vec![
            "data[tls.crt]: Required value",
            "data[tls.key]: Required value"
        ]
    );
    assert_eq!(
        tls.validate_update(&s)[2].to_string(),
        "type: Invalid value: \"kubernetes.io/tls\": field is immutable"
    );

    let mut frozen = s.clone();
    frozen.immutable = Some(true);
    let mut changed = frozen.clone();
    changed.data.insert("c".into(), "eA==".into());
    assert_eq!(
        changed
            .validate_update(&frozen)
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>(),
        vec!["data: Forbidden: field is immutable when `immutable` is set"]
    );
    let mut cm_frozen = cm.clone();
    cm_frozen.data.clear();
    cm_frozen.binary_data.clear();
    cm_frozen.immutable = Some(true);
    let mut cm_changed = cm_frozen.clone();
    cm_changed.immutable = Some(false);
    cm_changed.data.insert("k".into(), "v".into());
    assert_eq!(
        cm_changed
            .validate_update(&cm_frozen)
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>(),
        vec![
            "immutable: Forbidden: field is immutable when `immutable` is set",
            "data: Forbidden: field is immutable when `immutable` is set"
        ]
    );
}

#[test]
fn limit_range_and_quota() {
    let lr = |item: Value| -> LimitRange {
        from_value_strict(json!({
            "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "l", "namespace": "d"},
            "spec": {"limits": [item]}
        }))
        .unwrap()
    };
    let table: &[(Value, &str)] = &[
        (json!({"type": "Node"}), "spec.limits[0].type: Invalid value: \"Node\": must be a standard limit type or fully qualified"),
        (json!({"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}),
         "spec.limits[0].min.cpu: Invalid value: \"2\": min value 2 is greater than max value 1"),
        (json!({"type": "Container", "default": {"memory": "1Gi"}, "max": {"memory": "512Mi"}}),
         "spec.limits[0].default.memory: Invalid value: \"512Mi\": default value 1Gi is greater than max value 512Mi"),
        (json!({"type": "Container", "default": {"cpu": "100m"}, "defaultRequest": {"cpu": "200m"}}),
         "spec.limits[0].defaultRequest.cpu: Invalid value: \"200m\": default request value 200m is greater than default limit value 100m"),
        (json!({"type": "Container", "min": {"cpu": "300m"}, "defaultRequest": {"cpu": "200m"}}),
         "spec.limits[0].defaultRequest.cpu: Invalid value: \"200m\": min value 300m is greater than default request value 200m"),
        (json!({"type": "Pod", "default": {"cpu": "1"}}), "spec.limits[0].default: Forbidden: may not be specified when `type` is 'Pod'"),
        (json!({"type": "Container", "maxLimitRequestRatio": {"cpu": "500m"}}),
         "spec.limits[0].maxLimitRequestRatio.cpu: Invalid value: \"500m\": ratio 500m is less than 1"),
        (json!({"type": "PersistentVolumeClaim"}),
         "spec.limits[0].limits: Required value: either minimum or maximum storage value is required, but neither was provided"),
        (json!({"type": "Container", "max": {"cpu": "x"}}),
         "spec.limits[0].max.cpu: Invalid value: \"x\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
    ];
    for (item, want) in table {
        let errs = errors(&lr(item.clone()));
        assert!(
            errs.iter().any(|e| e == want),
            "{item}\nwant: {want}\ngot:  {errs:#?}"
        );
    }
    // Defaults: default ← max, defaultRequest ← default, then ← min.
    let mut l = lr(json!({"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}));
    l.apply_defaults();
    let item = &l.spec.unwrap().limits[0];
    assert_eq!(item.default["cpu"].as_str(), "2");
    assert_eq!(item.default_request["cpu"].as_str(), "2");
    assert_eq!(item.default_request["memory"].as_str(), "64Mi");

    let rq = |hard: Value| -> ResourceQuota {
        from_value_strict(json!({
            "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q", "namespace": "d"},
            "spec": {"hard": hard}
        }))
        .unwrap()
    };
    assert!(errors(&rq(
        json!({"pods": "10", "requests.cpu": "1500m", "count/pods": "3", "example.com/gpu": "2"})
    ))
    .is_empty());
    assert_eq!(
        errors(&rq(json!({"widgets": "1"}))),
        vec![
            "spec.hard.widgets: Invalid value: \"widgets\": must be a standard resource for quota"
        ]
    );
    assert_eq!(
        errors(&rq(json!({"pods": "1.5"}))),
        vec!["spec.hard.pods: Invalid value: \"1500m\": must be an integer"]
    );
    assert_eq!(
        errors(&rq(json!({"cpu": "-1"}))),
        vec!["spec.hard.cpu: Invalid value: \"-1\": must be greater than or equal to 0"]
    );
}

#[test]
fn other_kinds() {
    let node: Node = from_value_strict(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "spec": {"taints": [{"key": "a", "effect": "Never"}, {"key": "b", "effect": ""}], "podCIDR": "10.0.0.0/33"}
    }))
    .unwrap();
    assert_eq!(
        errors(&node),
        vec![
            "spec.taints[0].effect: Unsupported value: \"Never\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
            "spec.taints[1].effect: Required value",
            "spec.podCIDR: Invalid value: \"10.0.0.0/33\": must be a valid CIDR",
        ]
    );
    let ev: Event = from_value_strict(json!({
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e.1", "namespace": "a"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "b"}, "type": "Bad"
    }))
    .unwrap();
    assert_eq!(
        errors(&ev),
        vec![
            "involvedObject.namespace: Invalid value: \"b\": does not match event.namespace",
            "type: Invalid value: \"\": has invalid value: Bad",
        ]
    );
    let lease: Lease = from_value_strict(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1", "namespace": "kube-node-lease"},
        "spec": {"leaseDurationSeconds": 0}
    }))
    .unwrap();
    assert_eq!(
        errors(&lease),
        vec!["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
    );
    let ep: Endpoints = from_value_strict(json!({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e", "namespace": "d"},
        "subsets": [{"addresses": [{"ip": "nope"}], "ports": [{"port": 80}, {"port": 81, "protocol": "XDP"}]}]
    }))
    .unwrap();
    assert_eq!(
        errors(&ep),
        vec![
            "subsets[0].addresses[0].ip: Invalid value: \"nope\": must be a valid IP address",
            "subsets[0].ports[0].name: Required value",
            "subsets[0].ports[1].name: Required value",
            "subsets[0].ports[1].protocol: Unsupported value: \"XDP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        ]
    );
    let b = Binding {
        target: ObjectReference {
            kind: Some("Pod".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(
        errors(&b),
        vec![
            "target.name: Required value",
            "target.kind: Unsupported value: \"Pod\": supported values: \"Node\", \"<empty>\""
        ]
    );
    let mut ns = Namespace::with_meta(ObjectMeta::named("team"));
    assert!(errors(&ns).is_empty());
    kapsel_api::validation::namespace_status_defaults(&mut ns);
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
}

#[test]
fn pod_defaults() {
    let mut p = pod(json!({
        "containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}],
             "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "100m"}},
             "livenessProbe": {"httpGet": {"port": 80}}},
            {"name": "b", "image": "nginx:latest"},
            {"name": "c", "image": "registry:5000/app:1.2"},
            {"name": "d", "image": "registry:5000/app"},
            {"name": "e", "image": "app@sha256:abcd"},
        ],
        "volumes": [{"name": "v"}]
    }));
    p.apply_defaults();
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(spec.scheduler_name, None);
    assert_eq!(spec.enable_service_links, Some(true));
    assert!(spec.volumes[0].empty_dir.is_some());
    let pulls: Vec<_> = spec
        .containers
        .iter()
        .map(|c| c.image_pull_policy.as_deref().unwrap())
        .collect();
    assert_eq!(
        pulls,
        ["Always", "Always", "IfNotPresent", "Always", "IfNotPresent"]
    );
    let a = &spec.containers[0];
    assert_eq!(a.ports[0].protocol.as_deref(), Some("TCP"));
    assert_eq!(
        a.termination_message_path.as_deref(),
        Some("/dev/termination-log")
    );
    assert_eq!(a.termination_message_policy.as_deref(), Some("File"));
    let r = a.resources.as_ref().unwrap();
    assert_eq!(r.requests["cpu"].as_str(), "100m");
    assert_eq!(r.requests["memory"].as_str(), "1Gi");
    let probe = a.liveness_probe.as_ref().unwrap();
    assert_eq!(
        (
            probe.timeout_seconds,
            probe.period_seconds,
            probe.success_threshold,
            probe.failure_threshold
        ),
        (Some(1), Some(10), Some(1), Some(3))
    );
    let g = probe.http_get.as_ref().unwrap();
    assert_eq!(
        (g.path.as_deref(), g.scheme.as_deref()),
        (Some("/"), Some("HTTP"))
    );
    assert!(errors(&p).is_empty());
}

#[test]
fn workload_and_service_defaults() {
    let mut d = deployment(json!({}));
    d.apply_defaults();
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(spec.progress_deadline_seconds, Some(600));
    assert_eq!(spec.min_ready_seconds, None);
    let st = spec.strategy.as_ref().unwrap();
    assert_eq!(st.type_.as_deref(), Some("RollingUpdate"));
    let ru = st.rolling_update.as_ref().unwrap();
    assert_eq!(ru.max_surge, Some(IntOrString::String("25%".into())));
    assert_eq!(ru.max_unavailable, Some(IntOrString::String("25%".into())));
    let tspec = spec.template.as_ref().unwrap().spec.as_ref().unwrap();
    assert_eq!(tspec.restart_policy.as_deref(), Some("Always"));
    // Requests-from-limits and enableServiceLinks are pod-only defaults.
    assert_eq!(tspec.enable_service_links, None);

    let mut rs = ReplicaSet::with_meta(ObjectMeta::namespaced("d", "r"));
    rs.apply_defaults();
    assert_eq!(rs.spec.unwrap().replicas, Some(1));

    let mut s = service(
        json!({"ports": [{"port": 8080}, {"port": 9090, "targetPort": "metrics", "protocol": "UDP"}]}),
    );
    s.apply_defaults();
    let spec = s.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(spec.ports[0].protocol.as_deref(), Some("TCP"));
    assert_eq!(spec.ports[0].target_port, Some(IntOrString::Int(8080)));
    assert_eq!(
        spec.ports[1].target_port,
        Some(IntOrString::String("metrics".into()))
    );
    assert_eq!(spec.ports[1].protocol.as_deref(), Some("UDP"));
}
