use super::*;

const OK: &str = "uplink: eth0
services:
  - name: web
    vip: 198.19.0.10
    port: 80
    backends:
      - { address: 198.18.1.2, port: 8080, weight: 2 }
      - { address: 198.18.2.2, port: 8080, state: terminating }
";

fn parse(text: &str) -> Result<StandaloneConfig, ConfigError> {
    StandaloneConfig::from_yaml("t.yaml", text, &Checks::accept_all())
}

fn error(text: &str) -> String {
    parse(text).expect_err("must be rejected").to_string()
}

#[test]
fn a_valid_file_parses_with_defaults() {
    let c = parse(OK).expect("valid");
    assert_eq!(c.instance, DEFAULT_INSTANCE);
    assert_eq!(c.metrics_address, DEFAULT_METRICS_ADDRESS);
    assert_eq!(c.services.len(), 1);
    assert_eq!(c.desired_services()[0].backends.len(), 2);
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = OK.replace("port: 80\n", "port: 0\n").replace("weight: 2", "weight: 0");
    let e = error(&text);
    assert!(e.contains("services[0].port: port 0 is not allowed"), "{e}");
    assert!(e.contains("services[0].backends[0].weight: weight 0"), "{e}");
}

#[test]
fn unknown_fields_name_the_field() {
    let e = error(&OK.replace("port: 80\n", "port: 80\n    wieght: 1\n"));
    assert!(e.contains("wieght") && e.contains("t.yaml"), "{e}");
}

#[test]
fn duplicate_services_are_rejected() {
    let second = "  - name: web2\n    vip: 198.19.0.10\n    port: 80\n    backends: []\n";
    let e = error(&format!("{OK}{second}"));
    assert!(e.contains("services[1]"), "{e}");
}

#[test]
fn unknown_interfaces_are_rejected() {
    let checks = Checks::new(|_: &str| false, |_: &std::path::Path| Ok(()));
    let e = StandaloneConfig::from_yaml("t.yaml", OK, &checks).expect_err("unknown uplink").to_string();
    assert!(e.contains("uplink") && e.contains("eth0"), "{e}");
}

#[test]
fn the_shipped_example_is_valid() {
    let text = include_str!("../../../examples/standalone.yaml");
    let c = parse(text).expect("examples/standalone.yaml must stay valid");
    assert_eq!(c.services.len(), 3);
}
