//! The Kubernetes manifests in `packaging/kubernetes/` read into `k8s-openapi`'s typed API
//! objects (one Kubernetes version, the newest the crate offers). Those types skip keys they do
//! not know, so every file is also compared with its typed value written back: a key the typed
//! value lost is a typo (or a field no Kubernetes version has) and fails the test. Then what the
//! deployment promises: the node's logs and the state directory mounted from the host, the node
//! name from the downward API, requests and limits, a liveness probe on the agent's `/health`,
//! every node tolerated, read access to pods for the service account, and the config the
//! ConfigMap carries equal to `examples/kubernetes-node.yaml`.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::root;

fn manifest(name: &str) -> String {
    std::fs::read_to_string(format!("{}/packaging/kubernetes/{name}", root())).unwrap()
}

/// Reads one manifest into `T`. Fails on a YAML or type error (with its line) and on every key
/// of the YAML the typed value does not carry once written back.
fn typed<T: DeserializeOwned + Serialize>(yaml: &str) -> Result<T, String> {
    let value: T = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
    let original: Value = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&value).map_err(|e| e.to_string())?;
    let mut lost = Vec::new();
    lost_keys(&original, &back, "", &mut lost);
    if lost.is_empty() {
        Ok(value)
    } else {
        Err(format!("not part of the typed object: {}", lost.join(", ")))
    }
}

/// Paths in `original` that `back` lacks or holds with another value.
fn lost_keys(original: &Value, back: &Value, path: &str, lost: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (k, v) in o {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(bv) => lost_keys(v, bv, &p, lost),
                    None => lost.push(p),
                }
            }
        }
        (Value::Array(o), Value::Array(b)) if o.len() == b.len() => {
            for (i, (v, bv)) in o.iter().zip(b).enumerate() {
                lost_keys(v, bv, &format!("{path}[{i}]"), lost);
            }
        }
        (o, b) if o == b => {}
        (o, b) => lost.push(format!("{path} ({o} read back as {b})")),
    }
}

fn load<T: DeserializeOwned + Serialize>(name: &str) -> T {
    typed(&manifest(name)).unwrap_or_else(|e| panic!("packaging/kubernetes/{name}: {e}"))
}

/// The agent config the ConfigMap carries, as YAML.
fn agent_config() -> serde_yaml_ng::Value {
    let cm: ConfigMap = load("configmap.yaml");
    let text = cm.data.unwrap().remove("agent.yaml").unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec.template.spec.as_ref().unwrap()
}

fn agent_container(pod: &PodSpec) -> &Container {
    pod.containers
        .iter()
        .find(|c| c.name == "logferry")
        .unwrap()
}

#[test]
fn every_manifest_is_a_typed_kubernetes_object_without_unknown_keys() {
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(format!("{}/packaging/kubernetes", root())).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let text = manifest(&name);
        let head: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let kind = head["kind"].as_str().unwrap_or_default().to_owned();
        let checked = match kind.as_str() {
            "DaemonSet" => typed::<DaemonSet>(&text).map(drop),
            "ServiceAccount" => typed::<ServiceAccount>(&text).map(drop),
            "ClusterRole" => typed::<ClusterRole>(&text).map(drop),
            "ClusterRoleBinding" => typed::<ClusterRoleBinding>(&text).map(drop),
            "ConfigMap" => typed::<ConfigMap>(&text).map(drop),
            other => Err(format!("no typed check for kind {other:?}")),
        };
        if let Err(e) = checked {
            panic!("packaging/kubernetes/{name}: {e}");
        }
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "ServiceAccount"
        ]
    );
}

/// The check above is only worth something if a typo fails it: an unknown key the types would
/// skip, a misspelt required key, a value of the wrong type, a file of another kind.
#[test]
fn a_typo_in_a_manifest_fails_the_check() {
    let ds = manifest("daemonset.yaml");
    assert!(typed::<DaemonSet>(&ds).is_ok());
    let cases = [
        (
            "hostPath: { path: /var/log }",
            "hostpath: { path: /var/log }",
        ),
        ("serviceAccountName:", "serviceAcountName:"),
        ("mountPath: /var/log,", "mountpath: /var/log,"),
        (
            "terminationGracePeriodSeconds: 45",
            "terminationGracePeriodSeconds: soon",
        ),
        ("fieldPath: spec.nodeName", "fieldpath: spec.nodeName"),
    ];
    for (good, typo) in cases {
        assert!(ds.contains(good), "daemonset.yaml no longer has {good:?}");
        let broken = ds.replacen(good, typo, 1);
        let err = typed::<DaemonSet>(&broken).err();
        assert!(err.is_some(), "{typo:?} was accepted");
    }
    let err = typed::<DaemonSet>(&ds.replacen("tolerations:", "toleration:", 1)).unwrap_err();
    assert!(err.contains(".spec.template.spec.toleration"), "{err}");
    assert!(typed::<DaemonSet>(&manifest("configmap.yaml")).is_err());
}

#[test]
fn the_daemonset_mounts_node_logs_and_state_from_the_host() {
    let ds: DaemonSet = load("daemonset.yaml");
    let pod = pod_spec(&ds);
    let c = agent_container(pod);
    let config = agent_config();
    let data_dir = config["data_dir"].as_str().unwrap();
    let pods_path = config["inputs"][0]["path"].as_str().unwrap();
    assert!(pods_path.starts_with("/var/log/"), "{pods_path}");
    let volumes = pod.volumes.as_deref().unwrap_or_default();
    let mounts = c.volume_mounts.as_deref().unwrap_or_default();
    // CRI logs under /var/log/pods link into /var/lib/docker/containers on Docker nodes.
    for (host, writable) in [
        ("/var/log", false),
        ("/var/lib/docker/containers", false),
        (data_dir, true),
    ] {
        let vol = volumes
            .iter()
            .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == host))
            .unwrap_or_else(|| panic!("no hostPath volume for {host}"));
        let m = mounts
            .iter()
            .find(|m| m.name == vol.name)
            .unwrap_or_else(|| panic!("volume {} is not mounted", vol.name));
        assert_eq!(
            m.mount_path, host,
            "{host} is mounted where the config reads it"
        );
        assert_eq!(m.read_only.unwrap_or(false), !writable, "{host}");
    }
    // Positions survive a pod's replacement only on the node: the state dir is a hostPath
    // made on first use.
    let state = volumes
        .iter()
        .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == data_dir))
        .unwrap();
    assert_eq!(
        state.host_path.as_ref().unwrap().type_.as_deref(),
        Some("DirectoryOrCreate")
    );
}

#[test]
fn the_daemonset_has_the_node_name_resources_probe_and_tolerations() {
    let ds: DaemonSet = load("daemonset.yaml");
    let pod = pod_spec(&ds);
    let c = agent_container(pod);

    let node_name = c
        .env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME in env");
    let field = node_name
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("NODE_NAME from the downward API");
    assert_eq!(field.field_path, "spec.nodeName");
    assert!(
        agent_config()["inputs"][0]["node_name"]
            .as_str()
            .is_some_and(|v| v.contains("${NODE_NAME}")),
        "the kubernetes input takes its node from NODE_NAME"
    );

    let res = c.resources.as_ref().expect("resources");
    for (what, map) in [("requests", &res.requests), ("limits", &res.limits)] {
        let map = map.as_ref().unwrap_or_else(|| panic!("no {what}"));
        for r in ["cpu", "memory"] {
            assert!(map.contains_key(r), "{what} lack {r}");
        }
    }

    // The probe hits /health on the port the agent's API listens on, reachable from the
    // kubelet (not loopback).
    let listen = agent_config()["api"]["listen"].as_str().unwrap().to_owned();
    let (host, port) = listen.rsplit_once(':').unwrap();
    assert!(!host.starts_with("127.") && host != "localhost", "{listen}");
    let api_port: i32 = port.parse().unwrap();
    let probe = c.liveness_probe.as_ref().expect("liveness probe");
    let get = probe.http_get.as_ref().expect("an HTTP liveness probe");
    assert_eq!(get.path.as_deref(), Some("/health"));
    let probed = match &get.port {
        IntOrString::Int(p) => *p,
        IntOrString::String(name) => {
            c.ports
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .unwrap_or_else(|| panic!("probe names port {name}, which the container lacks"))
                .container_port
        }
    };
    assert_eq!(probed, api_port);

    assert!(
        pod.tolerations
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "a toleration of every taint (operator Exists, no key, no effect)"
    );
}

#[test]
fn the_service_account_may_get_list_and_watch_pods() {
    let sa: ServiceAccount = load("serviceaccount.yaml");
    let role: ClusterRole = load("clusterrole.yaml");
    let binding: ClusterRoleBinding = load("clusterrolebinding.yaml");
    let ds: DaemonSet = load("daemonset.yaml");

    let rules = role.rules.as_deref().unwrap_or_default();
    for verb in ["get", "list", "watch"] {
        assert!(
            rules.iter().any(|r| {
                r.api_groups
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|g| g.is_empty())
                    && r.resources
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .any(|x| x == "pods")
                    && r.verbs.iter().any(|v| v == verb)
            }),
            "the ClusterRole does not grant {verb} on pods"
        );
    }

    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        binding.role_ref.api_group.as_deref(),
        Some("rbac.authorization.k8s.io")
    );
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects = binding.subjects.as_deref().unwrap_or_default();
    assert!(
        subjects.iter().any(|s| s.kind == "ServiceAccount"
            && Some(&s.name) == sa.metadata.name.as_ref()
            && s.namespace == sa.metadata.namespace),
        "the binding names the service account {:?}/{:?}",
        sa.metadata.namespace,
        sa.metadata.name
    );

    assert_eq!(pod_spec(&ds).service_account_name, sa.metadata.name);
    assert_eq!(ds.metadata.namespace, sa.metadata.namespace);
}

/// The DaemonSet's ConfigMap carries the same config as `examples/kubernetes-node.yaml`, and
/// the container reads it where the volume puts it.
#[test]
fn the_configmap_holds_the_kubernetes_example() {
    let cm: ConfigMap = load("configmap.yaml");
    let embedded = cm.data.as_ref().unwrap()["agent.yaml"].clone();
    let example =
        std::fs::read_to_string(format!("{}/examples/kubernetes-node.yaml", root())).unwrap();
    assert_eq!(embedded.trim(), example.trim());

    let ds: DaemonSet = load("daemonset.yaml");
    let pod = pod_spec(&ds);
    assert_eq!(cm.metadata.namespace, ds.metadata.namespace);
    let vol = pod
        .volumes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|v| {
            v.config_map
                .as_ref()
                .is_some_and(|m| m.name == cm.metadata.name.clone().unwrap())
        })
        .expect("a volume of the ConfigMap");
    let c = agent_container(pod);
    let mount = c
        .volume_mounts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|m| m.name == vol.name)
        .expect("the ConfigMap mounted");
    let args = c.args.as_deref().unwrap_or_default();
    let config_arg = args
        .iter()
        .skip_while(|a| *a != "-c")
        .nth(1)
        .expect("-c FILE in args");
    assert_eq!(config_arg, &format!("{}/agent.yaml", mount.mount_path));
}
