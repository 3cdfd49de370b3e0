//! Unit tests of the Elasticsearch output's configuration, host choice and version probe
//! parsing. The protocol and failure behaviour are tested end to end against the in-repo fake
//! cluster in `tests/elasticsearch.rs`.

use super::*;
use crate::config::load_str;

fn config(extra: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
    load_str(
        "agent.yaml",
        &format!(
            "data_dir: /tmp/x\ninputs:\n  - {{ id: app, type: file, paths: [/tmp/x/*.log] }}\noutputs:\n  - id: es\n    type: elasticsearch\n{extra}"
        ),
    )
}

fn es_config(extra: &str) -> ElasticsearchConfig {
    let cfg = config(extra).unwrap();
    let text = format!("{:?}", cfg.outputs[0].kind.spec);
    assert!(text.contains("ElasticsearchConfig"));
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(extra).unwrap();
    serde_yaml_ng::from_value(v).unwrap()
}

#[test]
fn accepts_the_spec_example() {
    let c = es_config(
        "    hosts: [https://es1:9200, https://es2:9200]\n    index: \"logs-{{ service }}-%Y.%m.%d\"\n    auth: { username: elastic, password: secret }\n    tls: { verify: true }\n    compression: gzip\n",
    );
    assert_eq!(c.hosts.len(), 2);
    assert_eq!(c.op(), Op::Index);
    assert!(
        !format!("{c:?}").contains("secret"),
        "credentials never in Debug"
    );
    let c = es_config(
        "    hosts: [localhost:9200]\n    data_stream: { type: logs, dataset: app }\n    compression: none\n    idempotent: true\n",
    );
    assert_eq!(c.template_text(), "logs-app-default");
    assert_eq!(c.op(), Op::Create);
    assert_eq!(c.compression, Compression::None);
}

#[test]
fn rejects_bad_configs_with_located_errors() {
    for (extra, needle) in [
        ("    hosts: []\n", "at least one host"),
        ("    hosts: [\"ftp://x\"]\n", "http:// or https://"),
        (
            "    hosts: [x:9200]\n    index: a\n    data_stream: { dataset: b }\n",
            "not both",
        ),
        ("    hosts: [x:9200]\n    index: \"a-%Q\"\n", "%Q"),
        (
            "    hosts: [x:9200]\n    auth: { username: u }\n",
            "username, password",
        ),
        ("    hosts: [x:9200]\n    compression: zstd\n", "zstd"),
        ("    hosts: [x:9200]\n    bogus: 1\n", "bogus"),
        (
            "    hosts: [x:9200]\n    tls: { cert_file: /a.pem }\n",
            "go together",
        ),
    ] {
        let err = config(extra).unwrap_err().to_string();
        assert!(err.contains(needle), "{extra}: {err}");
        assert!(err.contains("outputs[0]"), "{err}");
    }
}

#[test]
fn auth_headers() {
    let basic = auth_header(Some(&AuthConfig {
        username: Some("elastic".into()),
        password: Some("changeme".into()),
        api_key: None,
    }))
    .unwrap()
    .unwrap();
    assert_eq!(basic.to_str().unwrap(), "Basic ZWxhc3RpYzpjaGFuZ2VtZQ==");
    assert!(basic.is_sensitive());
    let raw = auth_header(Some(&AuthConfig {
        api_key: Some("id:key".into()),
        ..AuthConfig::default()
    }))
    .unwrap()
    .unwrap();
    assert_eq!(raw.to_str().unwrap(), "ApiKey aWQ6a2V5");
    let encoded = auth_header(Some(&AuthConfig {
        api_key: Some("aWQ6a2V5".into()),
        ..AuthConfig::default()
    }))
    .unwrap()
    .unwrap();
    assert_eq!(encoded.to_str().unwrap(), "ApiKey aWQ6a2V5");
}

#[test]
fn hosts_fail_over_and_come_back() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = es_config("    hosts: [\"http://a:1\", \"http://b:2/prefix\"]\n");
    let es = Elasticsearch::new(&cfg, "es").unwrap();
    assert_eq!(
        es.hosts[1].bulk.path(),
        "/prefix/_bulk",
        "a path prefix is kept"
    );
    let picks: Vec<usize> = (0..4).map(|_| es.pick()).collect();
    assert_eq!(picks, vec![0, 1, 0, 1], "round-robin");
    es.host_failed(0);
    assert!((0..6).all(|_| es.pick() == 1), "a failed host sits out");
    es.host_failed(1);
    // Both sit out: the one back soonest (host 0, failed first) is used.
    assert_eq!(es.pick(), 0);
    es.host_ok(0);
    es.host_ok(1);
    let picks: Vec<usize> = (0..2).map(|_| es.pick()).collect();
    assert!(picks.contains(&0) && picks.contains(&1));
}

#[test]
fn tls_files_are_checked_at_build() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let cfg = es_config(&format!(
        "    hosts: [\"https://a:1\"]\n    tls: {{ ca_file: {} }}\n",
        ca.display()
    ));
    let err = format!("{:#}", Elasticsearch::new(&cfg, "es").err().unwrap());
    assert!(err.contains("ca.pem"), "{err}");
    let cfg =
        es_config("    hosts: [\"https://a:1\"]\n    tls: { ca_file: /nonexistent/ca.pem }\n");
    let err = format!("{:#}", Elasticsearch::new(&cfg, "es").err().unwrap());
    assert!(err.contains("cannot read tls.ca_file"), "{err}");
    let cfg = es_config("    hosts: [\"https://a:1\"]\n    tls: { verify: false }\n");
    assert!(Elasticsearch::new(&cfg, "es").is_ok());
}

#[test]
fn version_probe_answers() {
    assert_eq!(
        version_summary(br#"{"version":{"number":"8.15.0","build_flavor":"default"}}"#),
        Ok("Elasticsearch 8.15.0".to_owned())
    );
    assert_eq!(
        version_summary(br#"{"version":{"number":"7.17.22"}}"#),
        Ok("Elasticsearch 7.17.22".to_owned())
    );
    assert_eq!(
        version_summary(br#"{"version":{"distribution":"opensearch","number":"2.11.1"}}"#),
        Ok("OpenSearch 2.11.1".to_owned())
    );
    assert!(version_summary(br#"{"version":{"number":"6.8.0"}}"#).is_err());
    assert!(version_summary(b"<html>").is_err());
    assert!(version_summary(b"{}").is_err());
}

#[test]
fn retry_after_seconds() {
    assert_eq!(
        retry_after(Some(&HeaderValue::from_static("3"))),
        Some(Duration::from_secs(3))
    );
    assert_eq!(retry_after(Some(&HeaderValue::from_static("soon"))), None);
    assert_eq!(retry_after(None), None);
}
