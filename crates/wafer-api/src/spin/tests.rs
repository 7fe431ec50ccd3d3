use super::*;

const V2: &str = r#"
spin_manifest_version = 2

[application]
name = "Shop_App"
version = "1.0.0"

[application.trigger.http]
base = "/shop"

[variables]
api_host = { default = "api.example.com" }
token = { required = true, secret = true }

[[trigger.http]]
route = "/..."
component = "web"

[[trigger.http]]
route = "/cart/..."
component = "cart"

[[trigger.http]]
route = "/items/:id"
component = "cart"
executor = { type = "wagi", argv = "${SCRIPT_NAME}" }

[[trigger.http]]
route = { private = true }
component = "worker"

[[trigger.redis]]
channel = "orders"
component = "orders"

[component.web]
source = "web/app.wasm"
allowed_outbound_hosts = ["https://{{ api_host }}", "redis://cache:6379", "mysql://db:3306", "http://self"]
key_value_stores = ["default"]
files = ["static/**/*", { source = "assets", destination = "/srv/assets" }]
exclude_files = ["static/secret.txt"]
[component.web.build]
command = "make"

[component.cart]
source = "cart.wasm"
sqlite_databases = ["default"]
environment = { MODE = "prod" }
variables = { endpoint = "https://{{ api_host }}/v1", auth = "Bearer {{ token }}" }

[component.worker]
source = "worker.wasm"

[component.orders]
source = "orders.wasm"
"#;

fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_version_2_manifest_maps_components_routes_grants_and_variables() {
    let app = read(V2, None, &given(&[("token", "t0k")])).unwrap();
    assert_eq!(app.name, "shop-app");
    let names: Vec<_> = app.components.iter().map(|c| c.function.as_str()).collect();
    assert_eq!(names, ["shop-app-cart", "shop-app-web", "shop-app-worker"]);
    let [cart, web, worker] = &app.components[..] else {
        panic!("three components")
    };
    assert_eq!(web.config.routes, ["/shop"]);
    assert_eq!(web.source, "web/app.wasm");
    assert_eq!(
        web.config.allowed_outbound_hosts,
        [
            "https://api.example.com",
            "redis://cache:6379",
            "http://self"
        ]
    );
    assert_eq!(web.config.key_value_stores, ["default"]);
    assert_eq!(
        web.files,
        [
            FileMount::Pattern("static/**/*".into()),
            FileMount::Directory {
                source: "assets".into(),
                destination: "/srv/assets".into()
            }
        ]
    );
    assert_eq!(web.exclude_files, ["static/secret.txt"]);
    assert_eq!(cart.config.routes, ["/shop/cart", "/shop/items"]);
    assert_eq!(cart.config.kind, Some(Kind::Wagi));
    assert_eq!(cart.config.sqlite_databases, ["default"]);
    assert_eq!(cart.config.env["MODE"], "prod");
    assert_eq!(cart.variables["endpoint"], "https://api.example.com/v1");
    assert_eq!(
        cart.secrets["auth"], "Bearer t0k",
        "a template using a secret is secret"
    );
    assert!(!cart.variables.contains_key("auth"));
    assert!(worker.config.routes.is_empty() && worker.config.private);
    for want in [
        "trigger.redis (component `orders`) is not deployed",
        "component `orders` is not deployed: no HTTP trigger runs it",
        "outbound host \"mysql://db:3306\" is not granted: wafer has no mysql client",
        "its build section is ignored",
        "the WAGI executor's `argv` is ignored",
        "route \"/items/:id\" has parameters",
    ] {
        assert!(
            app.notes.iter().any(|n| n.contains(want)),
            "{want}: {:#?}",
            app.notes
        );
    }
}

#[test]
fn required_and_undeclared_variables_are_refused_with_the_way_to_give_them() {
    let e = read(V2, None, &BTreeMap::new()).unwrap_err();
    assert!(
        e.contains("--var token=VALUE or SPIN_VARIABLE_TOKEN"),
        "{e}"
    );
    let undeclared = V2.replace("{{ api_host }}/v1", "{{ nope }}");
    let e = read(&undeclared, None, &given(&[("token", "x")])).unwrap_err();
    assert!(
        e.contains("`nope`, which [variables] does not declare"),
        "{e}"
    );
    let given = given(&[("token", "x"), ("api_host", "other.test"), ("extra", "1")]);
    let app = read(V2, Some("Mine"), &given).unwrap();
    assert_eq!(app.name, "mine");
    assert_eq!(
        app.components[0].variables["endpoint"],
        "https://other.test/v1"
    );
    assert!(app.notes.iter().any(|n| n.contains("`extra` is given but")));
}

const V1: &str = r#"
spin_manifest_version = "1"
name = "hello"
version = "0.1.0"
trigger = { type = "http", base = "/" }

[variables]
who = { default = "world" }

[[component]]
id = "greet"
source = "greet.wasm"
allowed_http_hosts = ["insecure:allow-all"]
[component.trigger]
route = "/hello"
[component.config]
message = "hello, {{ who }}"

[[component]]
id = "static"
source = "static.wasm"
[component.trigger]
route = "/..."
executor = { type = "wagi" }
"#;

#[test]
fn a_version_1_manifest_reads_the_same_way() {
    let app = read(V1, None, &BTreeMap::new()).unwrap();
    assert_eq!(app.name, "hello");
    let [greet, site] = &app.components[..] else {
        panic!("two components")
    };
    assert_eq!(
        (greet.function.as_str(), greet.config.routes.as_slice()),
        ("hello-greet", &["/hello".to_string()][..])
    );
    assert_eq!(greet.variables["message"], "hello, world");
    assert_eq!(greet.config.allowed_outbound_hosts, ["*://*:*"]);
    assert_eq!(site.config.routes, ["/"], "the catch-all at the root");
    assert_eq!(site.config.kind, Some(Kind::Wagi));
    assert!(app.notes.is_empty(), "{:?}", app.notes);
}

#[test]
fn malformed_manifests_get_a_clear_error() {
    for (text, want) in [
        ("not toml [", "not valid TOML"),
        ("name = \"x\"", "no spin_manifest_version"),
        ("spin_manifest_version = 3", "not one wafer reads"),
        ("spin_manifest_version = 2\n[application]\nname = \"a\"", "no component an HTTP trigger runs"),
        (
            "spin_manifest_version = 2\n[application]\nname = \"a\"\n[[trigger.http]]\nroute = \"/\"\ncomponent = \"c\"\n[component.c]\nsource = { url = \"https://x/c.wasm\", digest = \"sha256:0\" }",
            "download the module",
        ),
        (
            "spin_manifest_version = 2\n[application]\nname = \"a\"\n[[trigger.http]]\nroute = 5\ncomponent = \"c\"\n[component.c]\nsource = \"c.wasm\"",
            "a route is a path",
        ),
    ] {
        let e = read(text, None, &BTreeMap::new()).unwrap_err();
        assert!(e.contains(want), "{want}: {e}");
    }
}

#[test]
fn long_names_are_shortened_and_stay_distinct() {
    let app = "a".repeat(40);
    let (one, two) = (
        function_name(&app, &"b".repeat(30)),
        function_name(&app, &"c".repeat(30)),
    );
    assert!(one.len() <= MAX_NAME && two.len() <= MAX_NAME);
    assert_ne!(one, two);
    assert_eq!(function_name("app", "My_Comp"), "app-my-comp");
}

#[test]
fn a_files_entry_must_be_a_pattern_or_a_directory_at_an_absolute_path() {
    for (entry, why) in [
        (r#"{ source = "a", destination = "rel" }"#, "absolute path"),
        (
            r#"{ source = "a", destination = "/x/../etc" }"#,
            "absolute path",
        ),
        (r#"{ source = "a" }"#, "needs `source` and `destination`"),
        ("3", "a pattern or"),
    ] {
        let text = format!(
            "spin_manifest_version = 2\n[application]\nname = \"a\"\n[[trigger.http]]\nroute = \"/x\"\n\
             component = \"c\"\n[component.c]\nsource = \"c.wasm\"\nfiles = [{entry}]\n"
        );
        let error = read(&text, None, &BTreeMap::new()).unwrap_err();
        assert!(error.contains(why), "{entry}: {error}");
    }
}
