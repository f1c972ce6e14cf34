"""The official Kubernetes Python client (PyPI `kubernetes`) against kapsel.

Run by tests/tests/kubectl.rs: python3 k8s_client.py KUBECONFIG IMAGE
Exits non-zero (an assertion or an exception) when something does not behave as on Kubernetes.
"""
import json
import sys
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

kubeconfig, image = sys.argv[1], sys.argv[2]
config.load_kube_config(config_file=kubeconfig)
core = client.CoreV1Api()
apps = client.AppsV1Api()
NS = "default"


def expect_error(code, reason, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        assert e.status == code, (e.status, e.body)
        body = json.loads(e.body)
        assert body["kind"] == "Status", body
        assert body["reason"] == reason, body
        assert body["code"] == code, body
        return body
    raise AssertionError(f"{fn.__name__} should fail with {code} {reason}")


# ConfigMap: create, read, patch, 409, 404, delete
cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-cm", labels={"app": "py"}), data={"a": "1"})
created = core.create_namespaced_config_map(NS, cm)
assert created.metadata.uid and created.metadata.resource_version
got = core.read_namespaced_config_map("py-cm", NS)
assert got.data == {"a": "1"}, got.data
patched = core.patch_namespaced_config_map("py-cm", NS, {"data": {"b": "2"}, "metadata": {"labels": {"app": None}}})
assert patched.data == {"a": "1", "b": "2"}, patched.data
assert not patched.metadata.labels, patched.metadata.labels
body = expect_error(409, "AlreadyExists", core.create_namespaced_config_map, NS, cm)
assert body["message"] == 'configmaps "py-cm" already exists', body
body = expect_error(404, "NotFound", core.read_namespaced_config_map, "nope", NS)
assert body["message"] == 'configmaps "nope" not found', body
core.delete_namespaced_config_map("py-cm", NS)
expect_error(404, "NotFound", core.read_namespaced_config_map, "py-cm", NS)
print("configmap: create/read/patch/delete, 409 AlreadyExists, 404 NotFound")

# Deployment: create, read, patch, scale, status, delete
dep = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "py-web", "labels": {"app": "py-web"}},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "py-web"}},
             "template": {"metadata": {"labels": {"app": "py-web"}},
                          "spec": {"containers": [{"name": "web", "image": image,
                                                   "command": ["/bin/busybox", "sleep", "3600"],
                                                   "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}}},
}
d = apps.create_namespaced_deployment(NS, dep)
assert d.metadata.generation == 1
d = apps.read_namespaced_deployment("py-web", NS)
assert d.spec.template.spec.containers[0].image == image
# strategic merge patch: env merged by name
d = apps.patch_namespaced_deployment("py-web", NS, {"spec": {"template": {"spec": {"containers": [
    {"name": "web", "env": [{"name": "B", "value": "3"}]}]}}}})
env = {e.name: e.value for e in d.spec.template.spec.containers[0].env}
assert env == {"A": "1", "B": "3"}, env
assert d.metadata.generation == 2, d.metadata.generation
s = apps.patch_namespaced_deployment_scale("py-web", NS, {"spec": {"replicas": 2}})
assert s.spec.replicas == 2 and s.kind == "Scale", s
s = apps.read_namespaced_deployment_scale("py-web", NS)
assert s.spec.replicas == 2 and s.status.selector == "app=py-web", s
deadline = time.time() + 120
while True:
    st = apps.read_namespaced_deployment_status("py-web", NS).status
    if st is not None and st.observed_generation == 3 and st.updated_replicas == 2:
        break
    assert time.time() < deadline, st
    time.sleep(0.5)
expect_error(409, "AlreadyExists", apps.create_namespaced_deployment, NS, dep)
apps.delete_namespaced_deployment("py-web", NS, body=client.V1DeleteOptions(propagation_policy="Foreground"))
deadline = time.time() + 60
while True:
    try:
        apps.read_namespaced_deployment("py-web", NS)
    except ApiException as e:
        assert e.status == 404
        break
    assert time.time() < deadline, "deployment not deleted"
    time.sleep(0.5)
expect_error(404, "NotFound", apps.read_namespaced_deployment, "py-web", NS)
print("deployment: create/read/strategic patch/scale/status/delete, 409, 404")

# Watch: ADDED, MODIFIED, DELETED of a ConfigMap
rv = core.list_namespaced_config_map(NS).metadata.resource_version
core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-watched"), data={"x": "1"}))
core.patch_namespaced_config_map("py-watched", NS, {"data": {"x": "2"}})
core.delete_namespaced_config_map("py-watched", NS)
seen = []
w = watch.Watch()
for ev in w.stream(core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=20):
    if ev["object"].metadata.name != "py-watched":
        continue
    seen.append((ev["type"], ev["object"].data["x"]))
    if ev["type"] == "DELETED":
        w.stop()
assert seen == [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")], seen
print("watch: ADDED, MODIFIED, DELETED")

# Pod logs
pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "py-logger"},
       "spec": {"terminationGracePeriodSeconds": 1,
                "containers": [{"name": "log", "image": image,
                                "command": ["/bin/busybox", "sh", "-c", "echo hello from kapsel; echo second line; sleep 3600"]}]}}
core.create_namespaced_pod(NS, pod)
deadline = time.time() + 120
log = ""
while "second line" not in log:
    assert time.time() < deadline, ("no log", core.read_namespaced_pod("py-logger", NS).status)
    time.sleep(0.5)
    try:
        log = core.read_namespaced_pod_log("py-logger", NS)
    except ApiException:
        log = ""
assert log == "hello from kapsel\nsecond line\n", repr(log)
tail = core.read_namespaced_pod_log("py-logger", NS, container="log", tail_lines=1)
assert tail == "second line\n", repr(tail)
expect_error(404, "NotFound", core.read_namespaced_pod_log, "nope", NS)
core.delete_namespaced_pod("py-logger", NS, grace_period_seconds=0)
print("pod log: read_namespaced_pod_log (default container, container=, tail_lines)")
print("python client: ok")
