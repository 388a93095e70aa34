#![allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]

use proptest::prelude::*;
use serde_json::json;

use super::admission::{FieldError, KindInfo, Rejection};
use super::auth::{Access, Caller, Role, TokenFileError, Verb, authorize, bearer, parse_token_file};
use super::error::{ApiError, lookup, qualified};
use super::handlers::dns_subdomain_problem;
use super::objects::{
    FieldSelector, LabelRequirement, LabelSelector, civil_from_days, merge_patch, new_uid, query_pairs, rfc3339,
};
use super::pki::Ca;
use super::routes::{Route, collection_prefix, object_key, route};
use super::x509;

const POD: KindInfo = KindInfo { api_version: "v1", kind: "Pod", resource: "pods", namespaced: true, read_only: false };
const NODE: KindInfo =
    KindInfo { api_version: "v1", kind: "Node", resource: "nodes", namespaced: false, read_only: false };
const DEPLOYMENT: KindInfo = KindInfo {
    api_version: "apps/v1",
    kind: "Deployment",
    resource: "deployments",
    namespaced: true,
    read_only: false,
};

#[test]
fn routes() {
    let kinds = [POD, NODE, DEPLOYMENT];
    let r = |p| route(p, &kinds);
    assert_eq!(r("/healthz"), Some(Route::Health));
    assert_eq!(r("/version"), Some(Route::Version));
    assert_eq!(r("/api/v1"), Some(Route::Resources("v1".into())));
    assert_eq!(r("/apis/apps/v1"), Some(Route::Resources("apps/v1".into())));
    assert_eq!(r("/apis/apps/v2"), None);
    assert_eq!(r("/api/v1/pods"), Some(Route::Collection { kind: POD, namespace: None }));
    assert_eq!(r("/api/v1/namespaces/a/pods"), Some(Route::Collection { kind: POD, namespace: Some("a".into()) }));
    assert_eq!(
        r("/api/v1/namespaces/a/pods/web/"),
        Some(Route::Object { kind: POD, namespace: Some("a".into()), name: "web".into() })
    );
    assert_eq!(
        r("/apis/apps/v1/namespaces/a/deployments/web"),
        Some(Route::Object { kind: DEPLOYMENT, namespace: Some("a".into()), name: "web".into() })
    );
    assert_eq!(r("/api/v1/deployments"), None, "wrong group");
    assert_eq!(r("/api/v1/pods/web"), None, "namespaced kind without a namespace");
    assert_eq!(r("/api/v1/namespaces/a/nodes"), None, "cluster-scoped kind in a namespace");
    assert_eq!(r("/api/v1/nodes/n1"), Some(Route::Object { kind: NODE, namespace: None, name: "n1".into() }));
    assert_eq!(r("/api/v1/namespaces/a/pods/web/status"), None);
    assert_eq!(object_key(&POD, Some("a"), "web"), "/registry/pods/a/web");
    assert_eq!(object_key(&NODE, None, "n1"), "/registry/nodes/n1");
    assert_eq!(collection_prefix(&POD, Some("a")), "/registry/pods/a/");
    assert_eq!(collection_prefix(&POD, None), "/registry/pods/");
}

#[test]
fn label_selectors() {
    let labels = json!({ "metadata": { "labels": { "app": "web", "tier": "front", "app.kubernetes.io/name": "x" } } });
    let matches = |s: &str| LabelSelector::parse(s).unwrap().matches(&labels);
    assert!(matches(""));
    assert!(matches("app=web"));
    assert!(matches("app==web,tier=front"));
    assert!(!matches("app=web,tier=back"));
    assert!(matches("app!=db"));
    assert!(matches("missing!=x"));
    assert!(matches("app in (db, web)"));
    assert!(!matches("app notin (web)"));
    assert!(matches("missing notin (web)"));
    assert!(matches("tier,!missing"));
    assert!(!matches("!tier"));
    assert!(matches("app.kubernetes.io/name=x"));
    assert_eq!(
        LabelSelector::parse("a in (x,y),b").unwrap().0,
        [
            LabelRequirement::In("a".into(), ["x".to_owned(), "y".to_owned()].into()),
            LabelRequirement::Exists("b".into())
        ]
    );
    for bad in ["a=b=c", "a in x", "a in (x", "=x", "a b", "a=(x)"] {
        assert!(LabelSelector::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn field_selectors() {
    let pod = json!({ "metadata": { "name": "web" }, "spec": { "nodeName": "n1", "replicas": 3 } });
    let matches = |s: &str| FieldSelector::parse(s).unwrap().matches(&pod);
    assert!(matches("metadata.name=web"));
    assert!(matches("spec.nodeName==n1,metadata.name!=db"));
    assert!(matches("spec.replicas=3"));
    assert!(matches("status.phase="), "a missing field reads as empty");
    assert!(!matches("spec.nodeName="));
    assert!(FieldSelector::parse("metadata.name").is_err());
}

#[test]
fn queries_are_percent_decoded() {
    assert_eq!(
        query_pairs(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&&x")),
        [("labelSelector".into(), "app=web,tier in (a)".into()), ("watch".into(), "1".into()), ("x".into(), "".into())]
    );
    assert_eq!(query_pairs(Some("a=%zz%4")), [("a".to_owned(), "%zz%4".to_owned())]);
    assert_eq!(query_pairs(Some("a=%C3%A9")), [("a".to_owned(), "é".to_owned())]);
}

#[test]
fn merge_patches_follow_rfc_7386() {
    let mut target = json!({ "a": "b", "c": { "d": "e", "f": "g" }, "l": [1, 2] });
    merge_patch(&mut target, &json!({ "a": "z", "c": { "f": null }, "l": [3], "n": { "o": 1 } }));
    assert_eq!(target, json!({ "a": "z", "c": { "d": "e" }, "l": [3], "n": { "o": 1 } }));
}

#[test]
fn field_paths_resolve() {
    let object =
        json!({ "spec": { "ports": [{ "port": 0 }, { "port": 80 }] }, "metadata": { "labels": { "a.b/c": "x" } } });
    assert_eq!(lookup(&object, "spec.ports[1].port"), Some(&json!(80)));
    assert_eq!(lookup(&object, "metadata.labels[a.b/c]"), Some(&json!("x")));
    assert_eq!(lookup(&object, "spec.ports[2].port"), None);
    assert_eq!(lookup(&object, "spec.missing"), None);
}

#[test]
fn invalid_messages_read_like_kube_apiserver() {
    let service =
        KindInfo { api_version: "v1", kind: "Service", resource: "services", namespaced: true, read_only: false };
    let object = json!({ "spec": { "ports": [{ "port": 0 }], "name": "Web" } });
    let rejection = Rejection::Invalid(vec![
        FieldError { field: "spec.ports[0].port".into(), reason: "must be between 1 and 65535, inclusive".into() },
        FieldError { field: "spec.selector".into(), reason: "must be set".into() },
        FieldError { field: "spec.ports[1].name".into(), reason: "Duplicate value: \"http\"".into() },
        FieldError { field: "spec.name".into(), reason: "must be a DNS label".into() },
    ]);
    let err = ApiError::rejected(rejection, &service, "web", &object);
    assert_eq!(
        err.to_string(),
        "Service \"web\" is invalid: [spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive, \
         spec.selector: Required value: must be set, spec.ports[1].name: Duplicate value: \"http\", \
         spec.name: Invalid value: \"Web\": must be a DNS label]"
    );
    let status = err.to_status();
    let reasons: Vec<&str> =
        status["details"]["causes"].as_array().unwrap().iter().map(|c| c["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["FieldValueInvalid", "FieldValueRequired", "FieldValueDuplicate", "FieldValueInvalid"]);
    assert_eq!(status["code"], 422);

    let not_found = ApiError::NotFound { kind: DEPLOYMENT, name: "web".into() };
    assert_eq!(not_found.to_string(), "deployments.apps \"web\" not found");
    assert_eq!(not_found.to_status()["details"], json!({ "name": "web", "group": "apps", "kind": "deployments" }));
    assert_eq!(qualified(&POD), "pods");
}

#[test]
fn token_files() {
    let users = parse_token_file(
        "# comment\n\nt1,alice,u1,\"system:masters,dev\"\nt2,bob,u2,berth:viewers\nt3,carol,u3\nt4,dave,u4,\"\",admin\n t5 , eve , u5 , \"a\"\"b\" , viewer\n",
    )
    .unwrap();
    let roles: Vec<(&str, Role)> = users.iter().map(|u| (u.name.as_str(), u.role)).collect();
    assert_eq!(
        roles,
        [
            ("alice", Role::Admin),
            ("bob", Role::Viewer),
            ("carol", Role::None),
            ("dave", Role::Admin),
            ("eve", Role::Viewer)
        ]
    );
    assert_eq!(users[0].groups, ["system:masters", "dev"]);
    assert_eq!(users[4].groups, ["a\"b"]);
    assert!(!format!("{:?}", users[0]).contains("t1"), "tokens stay out of logs");
    for (bad, line) in
        [("t,u", 1), ("t1,a,1\nt1,b,2", 2), (",a,1", 1), ("t,a,1,\"g", 1), ("t,a,1,g,root", 1), ("t,a,1,g,admin,x", 1)]
    {
        match parse_token_file(bad) {
            Err(TokenFileError::Line { line: l, .. }) => assert_eq!(l, line, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
    assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
    assert_eq!(bearer(Some("Basic abc")), None);
    assert_eq!(bearer(Some("Bearer ")), None);
}

#[test]
fn authorization_rules() {
    let caller = |access| Caller { name: "c".into(), access };
    let admin = caller(Access::Role(Role::Admin));
    let viewer = caller(Access::Role(Role::Viewer));
    let none = caller(Access::Role(Role::None));
    let node = caller(Access::Node("n1".into()));
    for verb in [Verb::Get, Verb::List, Verb::Watch, Verb::Create, Verb::Update, Verb::Patch, Verb::Delete] {
        assert!(authorize(&admin, verb, &POD, Some("a"), None).is_ok());
        let read = matches!(verb, Verb::Get | Verb::List | Verb::Watch);
        assert_eq!(authorize(&viewer, verb, &POD, Some("a"), Some("p")).is_ok(), read, "{verb:?}");
        assert!(authorize(&none, verb, &POD, Some("a"), None).is_err());
        assert_eq!(authorize(&node, verb, &POD, Some("a"), Some("p")).is_ok(), read, "{verb:?}");
        assert!(authorize(&node, verb, &NODE, None, Some("n1")).is_ok());
        assert_eq!(authorize(&node, verb, &NODE, None, Some("n2")).is_ok(), read, "{verb:?}");
    }
    // A create is checked before its body (name unknown) and again after.
    assert!(authorize(&node, Verb::Create, &NODE, None, None).is_ok());
    let err = authorize(&viewer, Verb::Delete, &NODE, None, Some("n1")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "nodes \"n1\" is forbidden: User \"c\" cannot delete resource \"nodes\" in API group \"\" at the cluster scope"
    );
}

#[test]
fn certificates_name_their_callers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::create(dir.path()).unwrap();
    assert!(matches!(Ca::create(dir.path()), Err(super::pki::PkiError::Exists { .. })));
    let der = |pem: &str| {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    };
    let node = ca.issue_node("worker-1").unwrap();
    let caller = Caller::from_certificate(&der(&node.cert_pem)).unwrap();
    assert_eq!(caller, Caller { name: "system:node:worker-1".into(), access: Access::Node("worker-1".into()) });
    let admin = ca.issue_client("root", Some("system:masters")).unwrap();
    assert_eq!(Caller::from_certificate(&der(&admin.cert_pem)).unwrap().access, Access::Role(Role::Admin));
    let plain = ca.issue_client("system:node:n9", None).unwrap();
    assert_eq!(
        Caller::from_certificate(&der(&plain.cert_pem)).unwrap().access,
        Access::Role(Role::None),
        "a node name without the nodes group is no node"
    );
    let subject = x509::subject(&der(ca.cert_pem())).unwrap();
    assert_eq!(
        (subject.common_names.as_slice(), subject.organizations.as_slice()),
        (&["berth-ca".to_owned()][..], &["berth".to_owned()][..])
    );

    // Files and modes; a reload matches; a foreign key is refused.
    use std::os::unix::fs::PermissionsExt;
    let mode = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("ca.key"), 0o600);
    assert_eq!(Ca::load(dir.path()).unwrap().cert_pem(), ca.cert_pem());
    let other = tempfile::tempdir().unwrap();
    Ca::create(other.path()).unwrap();
    std::fs::copy(other.path().join("ca.key"), dir.path().join("ca.key")).unwrap();
    assert!(matches!(Ca::load(dir.path()), Err(super::pki::PkiError::NotBerthCa { .. })));
}

/// The node's key never leaves it: the CA signs a request only for the
/// identity it names, only when the request is signed by its key, and puts
/// its own subject and usages on the certificate.
#[test]
fn node_signing_requests() {
    use rcgen::{CertificateParams, DnType, KeyPair};

    use super::pki::{JoinError, node_signing_request};

    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::create(dir.path()).unwrap();
    let der = |pem: &str| {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    };
    let request = node_signing_request("worker-1").unwrap();
    let cert = ca.sign_node_request("worker-1", &request.csr_pem).unwrap();
    let caller = Caller::from_certificate(&der(&cert)).unwrap();
    assert_eq!(caller, Caller { name: "system:node:worker-1".into(), access: Access::Node("worker-1".into()) });
    // The certificate is for the node's key: the pair loads into rustls.
    let key = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::PrivateKeyDer::from_pem_slice(request.key_pem.as_bytes()).unwrap()
    };
    rustls::ServerConfig::builder_with_provider(super::pki::crypto().clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der(&cert)], key)
        .expect("certificate and key match");

    let refused = |name: &str, csr: &str| match ca.sign_node_request(name, csr) {
        Err(JoinError::Refused(why)) => why.0,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // Another node's name, or a request made for another identity.
    assert!(refused("worker-2", &request.csr_pem).contains("CN must be \"system:node:worker-2\""));
    let custom = |edit: &dyn Fn(&mut CertificateParams)| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::OrganizationName, "system:nodes");
        params.distinguished_name.push(DnType::CommonName, "system:node:worker-1");
        edit(&mut params);
        params.serialize_request(&key).unwrap().pem().unwrap()
    };
    assert!(custom(&|_| {}).len() > 100);
    assert_eq!(ca.sign_node_request("worker-1", &custom(&|_| {})).map(|_| ()).ok(), Some(()));
    let masters = custom(&|p| p.distinguished_name.push(DnType::OrganizationName, "system:masters"));
    assert!(
        refused("worker-1", &masters).contains("O must be \"system:nodes\" alone"),
        "{}",
        refused("worker-1", &masters)
    );
    let with_san = custom(&|p| p.subject_alt_names = vec![rcgen::SanType::DnsName("api".try_into().unwrap())]);
    assert!(refused("worker-1", &with_san).contains("no subject alternative names"));
    let server_auth = custom(&|p| p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth]);
    assert!(refused("worker-1", &server_auth).contains("only be used for client authentication"));
    let ca_request = custom(&|p| p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained));
    assert!(refused("worker-1", &ca_request).contains("cannot be a CA"));
    // A request whose signature does not match its key (one base64
    // character of the signature changed), and garbage.
    let mut lines: Vec<String> = request.csr_pem.lines().map(str::to_owned).collect();
    let second_last = lines.len() - 2;
    let line = &mut lines[second_last];
    let middle = line.len() / 2;
    let flipped = if &line[middle..=middle] == "A" { "B" } else { "A" };
    line.replace_range(middle..=middle, flipped);
    let tampered = lines.join("\n");
    let why = refused("worker-1", &tampered);
    assert!(why.contains("not signed by the key") || why.contains("cannot read"), "{why}");
    assert!(refused("worker-1", "not a pem").contains("not a PEM certificate signing request"));
}

#[test]
fn node_names() {
    assert_eq!(dns_subdomain_problem("worker-1.example"), None);
    for bad in ["", "Worker", "-a", "a-", "a..b", "a_b", &"a".repeat(254)] {
        assert!(dns_subdomain_problem(bad).is_some(), "{bad}");
    }
}

#[test]
fn time_and_uids() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
    let uid = new_uid().unwrap();
    assert_eq!(uid.len(), 36);
    assert_eq!(&uid[14..15], "4", "{uid}");
    assert_ne!(uid, new_uid().unwrap());
}

proptest! {
    /// Parsers of untrusted input never panic.
    #[test]
    fn parsers_are_total(text in ".{0,64}", bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = LabelSelector::parse(&text);
        let _ = FieldSelector::parse(&text);
        let _ = query_pairs(Some(&text));
        let _ = parse_token_file(&text);
        let _ = x509::subject(&bytes);
        let _ = lookup(&json!({ "a": [{ "b": 1 }] }), &text);
    }

    /// Day counts round-trip through the civil date (checked against the
    /// day-of-year arithmetic of a plain loop).
    #[test]
    fn civil_dates_advance_by_one_day(days in -100_000i64..100_000) {
        let (y0, m0, d0) = civil_from_days(days);
        let (y1, m1, d1) = civil_from_days(days + 1);
        prop_assert!((y1, m1, d1) > (y0, m0, d0));
        prop_assert!(d1 == d0 + 1 || (d1 == 1 && (m1 == m0 + 1 || (m1 == 1 && m0 == 12 && y1 == y0 + 1))));
    }
}
