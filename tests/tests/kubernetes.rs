//! The Kubernetes manifests of examples/kubernetes, checked offline: the kustomization is
//! rendered (base and the production overlay) by tests/kubernetes/kustomize.py and every
//! object is validated against the Kubernetes JSON schemas that kubernetes-validate (PyPI,
//! installed into the repository's .venv by scripts/lib.sh) bundles, then the rendered
//! objects are checked against each other and against the proxy: the configuration in the
//! ConfigMap passes `switchyard check-config` with the plugins from the other ConfigMap.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use serde_json::Value;
use switchyard_tests::load::python;
use switchyard_tests::tools::run_command;
use switchyard_tests::{env, scratch};

/// Kubernetes versions the manifests must be valid for: the oldest supported (the preStop
/// `sleep` action is GA from 1.30) and the newest the schemas cover.
const VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];
/// The plugins the base's ConfigMap carries, as built by scripts/build-plugins.
const PLUGINS: [&str; 3] = ["health", "switchover", "retry"];

/// Copies `from` into `to`, recursively.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// examples/kubernetes copied to a scratch directory, with the bundled plugins the base's
/// ConfigMap generator reads put in base/plugins/ (as the README says to).
fn layout() -> Result<PathBuf> {
    let dir = scratch::fresh_dir("kubernetes")?;
    copy_tree(&env::workspace_dir().join("examples/kubernetes"), &dir)?;
    for plugin in PLUGINS {
        let built = switchyard_tests::plugin::component(plugin)?;
        std::fs::copy(&built, dir.join(format!("base/plugins/{plugin}.wasm")))?;
    }
    Ok(dir)
}

/// The kustomization in `dir` rendered and validated against [`VERSIONS`]: (objects, errors).
/// `None` when the test should skip (kubernetes-validate is not installed).
fn render(dir: &Path) -> Result<Option<(Vec<Value>, Vec<String>)>> {
    let python = python()?;
    let probe = run_command(
        std::process::Command::new(&python).args(["-c", "import kubernetes_validate, yaml"]),
        None,
        Duration::from_secs(60),
    )?;
    if !probe.status_ok {
        env::skip("kubernetes-validate is not installed in the .venv (run `scripts/lib.sh install`)")?;
        return Ok(None);
    }
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(env::crate_dir().join("kubernetes/kustomize.py")).arg(dir);
    for v in VERSIONS {
        cmd.args(["--kubernetes-version", v]);
    }
    let out = run_command(&mut cmd, None, Duration::from_secs(120))?;
    let report: Value = serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("kustomize.py printed no JSON: {}\n{}", out.stdout, out.stderr))?;
    let list = |key: &str| report[key].as_array().cloned().unwrap_or_default();
    let errors = list("errors")
        .iter()
        .map(|e| e.as_str().unwrap_or_default().to_string())
        .collect();
    Ok(Some((list("objects"), errors)))
}

fn one<'a>(objects: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    match found[..] {
        [o] => Ok(o),
        _ => bail!("expected one {kind} {name}, rendered {}", found.len()),
    }
}

/// Whether every label of `selector` is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The port of a `host:port` setting.
fn port_of(config: &toml::Table, key: &str) -> Result<u64> {
    let addr = config["proxy"][key]
        .as_str()
        .with_context(|| format!("[proxy] {key}"))?;
    Ok(addr.rsplit(':').next().unwrap_or_default().parse()?)
}

/// The production overlay (and the base) render, and every object is valid for Kubernetes
/// 1.30 and 1.37 under strict validation (no unknown field); a copy of the base with a
/// misspelled field is refused, naming it. In the overlay: a Deployment of 4 replicas in
/// namespace `db-proxy` with the overlay's image, whose selector the Service and the
/// PodDisruptionBudget (`maxUnavailable` 1) select its pods by; pods run as non-root with
/// the RuntimeDefault seccomp profile, a read-only root filesystem, no privilege escalation,
/// CPU and memory requests, and a grace period longer than the proxy's `shutdown_timeout`;
/// the readiness probe is a TCP check of the container port the configuration's `listen`
/// names, the liveness probe `GET /metrics` on the port of `metrics_listen`; the `--config`
/// argument is the file the config ConfigMap is mounted as; the plugins ConfigMap holds the
/// built plugins' bytes as binaryData, mounted where the configuration's plugin paths point;
/// and that configuration, with the plugins so mounted, passes `switchyard check-config`.
#[test]
fn kubernetes_manifests_render_validate_and_carry_a_configuration_the_proxy_accepts() -> Result<()> {
    let dir = layout()?;
    let Some((base, errors)) = render(&dir.join("base"))? else {
        return Ok(());
    };
    ensure!(errors.is_empty(), "the base is invalid: {errors:#?}");
    println!("base: {} objects valid for Kubernetes {VERSIONS:?}", base.len());
    let Some((objects, errors)) = render(&dir.join("overlays/production"))? else {
        return Ok(());
    };
    ensure!(
        errors.is_empty(),
        "the production overlay is invalid: {errors:#?}"
    );
    let kinds: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    println!("production overlay: {kinds:?}, valid for Kubernetes {VERSIONS:?}");
    ensure!(
        objects.iter().all(|o| o["metadata"]["namespace"] == "db-proxy"),
        "every object should be in the overlay's namespace db-proxy"
    );

    // A field the schema does not know is refused: the validation can fail.
    let broken = scratch::fresh_dir("kubernetes-broken")?;
    copy_tree(&dir.join("base"), &broken)?;
    let deployment = broken.join("deployment.yaml");
    let text = std::fs::read_to_string(&deployment)?;
    std::fs::write(
        &deployment,
        text.replace("automountServiceAccountToken:", "automountServiceAcountToken:"),
    )?;
    let (_, errors) = render(&broken)?.context("kubernetes-validate went away")?;
    ensure!(
        errors.iter().any(|e| e.contains("automountServiceAcountToken")),
        "a misspelled field should be refused by the strict schema: {errors:?}"
    );

    let deployment = one(&objects, "Deployment", "switchyard")?;
    let spec = &deployment["spec"];
    let pod = &spec["template"]["spec"];
    let pod_labels = &spec["template"]["metadata"]["labels"];
    ensure!(
        spec["replicas"] == 4,
        "the overlay runs 4 replicas: {}",
        spec["replicas"]
    );
    ensure!(
        selects(&spec["selector"]["matchLabels"], pod_labels),
        "the Deployment's selector misses its pods"
    );
    let service = one(&objects, "Service", "switchyard")?;
    ensure!(
        selects(&service["spec"]["selector"], pod_labels),
        "the Service selects no pod"
    );
    let pdb = one(&objects, "PodDisruptionBudget", "switchyard")?;
    ensure!(
        selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels) && pdb["spec"]["maxUnavailable"] == 1,
        "the PodDisruptionBudget should cover the pods with maxUnavailable 1: {pdb}"
    );
    ensure!(
        pod["securityContext"]["runAsNonRoot"] == true
            && pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault",
        "pod securityContext: {}",
        pod["securityContext"]
    );
    let containers = pod["containers"].as_array().context("containers")?;
    ensure!(containers.len() == 1, "one container expected");
    let container = &containers[0];
    ensure!(
        container["image"] == "registry.example.com/switchyard:0.1.0",
        "the overlay's image: {}",
        container["image"]
    );
    let security = &container["securityContext"];
    ensure!(
        security["readOnlyRootFilesystem"] == true && security["allowPrivilegeEscalation"] == false,
        "container securityContext: {security}"
    );
    let requests = &container["resources"]["requests"];
    ensure!(
        requests["cpu"].is_string() && requests["memory"].is_string(),
        "CPU and memory requests: {requests}"
    );

    // The configuration, from the ConfigMap the --config argument's file is mounted from.
    let args: Vec<&str> = container["args"]
        .as_array()
        .context("args")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let config_path = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .context("no --config argument")?;
    let mounts = container["volumeMounts"].as_array().context("volumeMounts")?;
    let volumes = pod["volumes"].as_array().context("volumes")?;
    let config_map_at = |path: &str| -> Result<(&Value, Option<&str>)> {
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .with_context(|| format!("nothing mounted at {path}"))?;
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .with_context(|| format!("no volume {}", mount["name"]))?;
        let name = volume["configMap"]["name"]
            .as_str()
            .with_context(|| format!("volume {} is not a ConfigMap", mount["name"]))?;
        Ok((one(&objects, "ConfigMap", name)?, mount["subPath"].as_str()))
    };
    let (config_map, key) = config_map_at(config_path)?;
    let key = key.context("the configuration file is mounted with a subPath")?;
    let text = config_map["data"][key]
        .as_str()
        .with_context(|| format!("ConfigMap has no data key {key}"))?;
    let config: toml::Table = text.parse().context("switchyard.toml in the ConfigMap")?;

    let port = |name: &str| -> Result<u64> {
        container["ports"]
            .as_array()
            .context("ports")?
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .with_context(|| format!("no container port {name}"))
    };
    let readiness = &container["readinessProbe"]["tcpSocket"]["port"];
    ensure!(
        readiness.as_str().map(port).transpose()? == Some(port_of(&config, "listen")?),
        "the readiness probe should check the port clients connect to: {readiness}"
    );
    let liveness = &container["livenessProbe"]["httpGet"];
    ensure!(
        liveness["path"] == "/metrics"
            && liveness["port"].as_str().map(port).transpose()? == Some(port_of(&config, "metrics_listen")?),
        "the liveness probe should GET /metrics on metrics_listen's port: {liveness}"
    );
    let shutdown = config["proxy"]["shutdown_timeout"].as_str().unwrap_or("30s");
    let shutdown: u64 = shutdown
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("shutdown_timeout {shutdown:?}: expected whole seconds (\"30s\")"))?;
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    ensure!(
        grace > shutdown,
        "terminationGracePeriodSeconds {grace} should exceed shutdown_timeout ({shutdown} s)"
    );

    // The plugins ConfigMap, mounted where the configuration's plugin paths point, carries
    // the built components byte for byte; check-config loads them from a copy.
    let local = scratch::fresh_dir("kubernetes-config")?;
    let mut text = text.to_string();
    let plugins = config["plugins"].as_table().context("[plugins]")?;
    for (name, plugin) in plugins {
        let path = Path::new(plugin["path"].as_str().context("plugin path")?);
        let mount = path.parent().context("plugin directory")?;
        let file = path.file_name().context("plugin file")?.to_string_lossy();
        let (map, _) = config_map_at(&mount.to_string_lossy())?;
        let data = map["binaryData"][&*file].as_str().with_context(|| {
            format!(
                "plugin {name}: no binaryData {file} in {}",
                map["metadata"]["name"]
            )
        })?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(data)?;
        let built = std::fs::read(switchyard_tests::plugin::component(
            file.trim_end_matches(".wasm"),
        )?)?;
        ensure!(
            bytes == built,
            "plugin {name}: the ConfigMap's {file} differs from the built one"
        );
        std::fs::write(local.join(&*file), bytes)?;
        text = text.replace(
            &path.display().to_string(),
            &local.join(&*file).display().to_string(),
        );
    }
    let cache = config["proxy"]["plugin_cache_dir"]
        .as_str()
        .context("plugin_cache_dir")?;
    text = text.replace(cache, &local.join("cache").display().to_string());
    let file = local.join("switchyard.toml");
    std::fs::write(&file, &text)?;
    env::set_mode(&file, 0o600)?;
    let out = run_command(
        std::process::Command::new(env::proxy_binary()?)
            .arg("check-config")
            .arg(&file),
        None,
        Duration::from_secs(300),
    )?;
    println!("check-config: {}{}", out.stdout.trim(), out.stderr.trim());
    ensure!(
        out.status_ok,
        "switchyard check-config refused the ConfigMap's configuration: {}",
        out.stderr
    );
    Ok(())
}
